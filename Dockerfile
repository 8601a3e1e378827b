# Image of the EmerDiff Label Studio ML backend (docs/DEPLOY.md). BuildKit is required (cache and secret
# mounts): Docker 23+ uses it by default, older Docker needs DOCKER_BUILDKIT=1.
#   GPU (default):  docker build -t emerdiff-ml-backend .
#   CPU:            docker build --build-arg BASE_IMAGE=debian:bookworm-slim --build-arg TORCH_VARIANT=cpu \
#                     -t emerdiff-ml-backend:cpu .
#   Behind a TLS-inspecting proxy:  add --secret id=ca,src=/path/to/ca-bundle.crt
#   Air-gapped: pip download -r requirements.txt -d docker/wheelhouse (on a connected machine of the same
#               platform), then add --build-arg PIP_NO_INDEX=1
# No "# syntax=" line on purpose: it would make BuildKit pull a frontend image from Docker Hub; the built-in
# frontend of Docker 20.10+ understands every instruction below.

# The CUDA runtime and the torch wheel's CUDA build must agree (12.8 <-> cu128); change both together.
# Any Debian or Ubuntu image with a python3.11 package works (bookworm, jammy).
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${BASE_IMAGE}

# TORCH_VARIANT: cuda (the build asserts that torch has CUDA) or cpu (asserts that it has none).
ARG TORCH_VARIANT=cuda
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
# Read by pip itself when given (no defaults, so unset unless passed): PIP_NO_INDEX=1 installs from
# docker/wheelhouse only; PIP_INDEX_URL points at a mirror. Build arguments show in `docker history`:
# never put credentials in them (use a secret).
ARG PIP_NO_INDEX
ARG PIP_INDEX_URL

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python 3.11, the version the project is developed and tested on. apt's lists and downloads live in cache
# mounts (kept by BuildKit between builds, never in a layer); official images delete downloads after each
# install (docker-clean), which would defeat the cache. The optional secret "ca" is an extra CA bundle for
# a TLS-inspecting proxy: used for this build only, it is not part of the image.
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \
    --mount=type=secret,id=ca \
    rm -f /etc/apt/apt.conf.d/docker-clean \
 && apt_ca=() && if [[ -s /run/secrets/ca ]]; then apt_ca=(-o Acquire::https::CAInfo=/run/secrets/ca); fi \
 && apt-get "${apt_ca[@]}" update \
 && apt-get "${apt_ca[@]}" install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# requirements.txt (the service's requirements only; tests' tools are in requirements-dev.txt) pins
# torch==2.13.0. torch comes first, from the variant's PyTorch index or the wheelhouse; then the rest,
# constrained to the torch just installed so that no other package can swap it for another build.
# docker/wheelhouse is always offered (--find-links); empty, it changes nothing.
WORKDIR /app
COPY requirements.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca \
    --mount=type=bind,source=docker/wheelhouse,target=/wheelhouse \
    if [[ -s /run/secrets/ca ]]; then export PIP_CERT=/run/secrets/ca; fi \
 && case "$TORCH_VARIANT" in \
      cuda) torch_index="$TORCH_CUDA_INDEX_URL" torch_check="assert torch.version.cuda, 'torch is a CPU build'" ;; \
      cpu) torch_index="$TORCH_CPU_INDEX_URL" torch_check="assert not torch.version.cuda, 'torch is a CUDA build'" ;; \
      *) echo "TORCH_VARIANT=$TORCH_VARIANT: must be cuda or cpu" >&2; exit 64 ;; \
    esac \
 && pip install --find-links /wheelhouse --index-url "$torch_index" "torch==${TORCH_VERSION}" \
 && pip freeze | grep -i '^torch==' > /tmp/torch-constraint.txt \
 && grep -viE '^torch([=<>!~ ]|$)' requirements.txt > /tmp/requirements-without-torch.txt \
 && pip install --find-links /wheelhouse -r /tmp/requirements-without-torch.txt --constraint /tmp/torch-constraint.txt \
 && rm /tmp/torch-constraint.txt /tmp/requirements-without-torch.txt \
 && python -c "import torch; ${torch_check}"

# The service runs unprivileged; the volumes it writes to belong to it (a fresh named volume copies
# the owner of the image's folder).
RUN useradd --create-home --uid 10001 --user-group emerdiff \
 && mkdir -p /models /cache /data /label-studio/files \
 && chown emerdiff:emerdiff /models /cache /data

COPY segmentor/ segmentor/
COPY converters/ converters/
COPY ml_backend/ ml_backend/
# Not all of docker/: docker/wheelhouse is build input only.
COPY docker/entrypoint.sh docker/preflight.py docker/healthcheck.py docker/

# Zero-shot labels read CLIP from disk only (never downloaded at start): --build-arg CLIP_MODEL=<hub id> (e.g.
# openai/clip-vit-base-patch16, ~600 MB) bakes it into /opt/clip and makes it the default EMERDIFF_CLIP_MODEL.
# Empty (default): no CLIP in the image, zero-shot off unless EMERDIFF_CLIP_MODEL names a mounted folder.
ARG CLIP_MODEL=
RUN if [ -n "$CLIP_MODEL" ]; then \
      python -c "import sys; from huggingface_hub import snapshot_download; snapshot_download(sys.argv[1], \
local_dir='/opt/clip', allow_patterns=['*.json', '*.txt', 'model.safetensors'])" "$CLIP_MODEL" \
      && rm -rf /opt/clip/.cache; \
    fi
ENV EMERDIFF_CLIP_MODEL=${CLIP_MODEL:+/opt/clip}

# HF_HOME: where a hub model (EMERDIFF_MODEL, default Stable Diffusion 1.5) is downloaded once and kept.
# DATA_DIR: what the service learns (label memory). ON_CONFIG_ERROR=hold: on a configuration error the
# entrypoint reports it and waits to be stopped instead of exiting, so that a restart policy cannot
# restart it in a loop (docs/DEPLOY.md, "Configuration errors").
ENV HF_HOME=/models \
    CACHE_DIR=/cache/segmentations \
    DATA_DIR=/data \
    HOST=0.0.0.0 \
    PORT=9090 \
    PYTHON=/opt/venv/bin/python \
    ON_CONFIG_ERROR=hold
VOLUME ["/models", "/cache", "/data"]

USER emerdiff
EXPOSE 9090
# The first start may download several GB of weights before the worker answers.
HEALTHCHECK --interval=30s --timeout=10s --start-period=900s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]
ENTRYPOINT ["bash", "/app/docker/entrypoint.sh"]
