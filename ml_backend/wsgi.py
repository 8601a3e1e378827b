"""The WSGI entry point: ``gunicorn -c ml_backend/gunicorn_conf.py ml_backend.wsgi:app``.

Importing this module reads the settings from the environment and loads the model, once per worker
process, before the first request.
"""

from ml_backend.service.app import create_app

app = create_app()
