# syntax=docker/dockerfile:1
# GPU image of the EmerDiff Label Studio ML backend (docs/DEPLOY.md).
#   docker build -t emerdiff-ml-backend .
#   docker run --gpus 1 -p 9090:9090 -v emerdiff-models:/models emerdiff-ml-backend

# The CUDA runtime and the torch wheel's CUDA build must agree (12.8 <-> cu128); change both together.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}

# requirements.txt pins torch==2.13.0, the CPU wheel of the development machines. The image takes torch
# from PyTorch's CUDA index instead, first, then the rest of requirements.txt without the torch line,
# constrained to the torch just installed so that no other package can swap it for another build.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python 3.11: the version the project is developed and tested on (Ubuntu 22.04 ships it as python3.11).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY requirements.txt ./
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && pip freeze | grep -i '^torch==' > /tmp/torch-constraint.txt \
 && grep -viE '^torch([=<>!~ ]|$)' requirements.txt > /tmp/requirements-without-torch.txt \
 && pip install -r /tmp/requirements-without-torch.txt --constraint /tmp/torch-constraint.txt \
 && python -c "import torch; assert torch.version.cuda, 'torch in the image is a CPU build'"

# The service runs unprivileged; the volumes it writes to belong to it (a fresh named volume copies
# the owner of the image's folder).
RUN useradd --create-home --uid 10001 --user-group emerdiff \
 && mkdir -p /models /cache /label-studio/files \
 && chown emerdiff:emerdiff /models /cache

COPY segmentor/ segmentor/
COPY converters/ converters/
COPY ml_backend/ ml_backend/
COPY docker/ docker/

# HF_HOME: where a hub model (EMERDIFF_MODEL, default Stable Diffusion 1.5) is downloaded once and kept.
ENV HF_HOME=/models \
    CACHE_DIR=/cache/segmentations \
    HOST=0.0.0.0 \
    PORT=9090 \
    PYTHON=/opt/venv/bin/python
VOLUME ["/models", "/cache"]

USER emerdiff
EXPOSE 9090
# The first start may download several GB of weights before the worker answers.
HEALTHCHECK --interval=30s --timeout=10s --start-period=900s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]
ENTRYPOINT ["bash", "/app/docker/entrypoint.sh"]
