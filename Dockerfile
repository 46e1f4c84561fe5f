# One image for the API and the worker (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# CPU torch first, from the PyTorch index: `pip install .` then sees torch>=2.2 satisfied and installs no CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md alembic.ini ./
COPY api ./api
COPY cli ./cli
COPY db ./db
COPY evaluation ./evaluation
COPY models ./models
COPY worker ./worker
RUN pip install . \
    # torchattacks' metadata would pull a CUDA torch, torchvision and requests==2.25.1: install it alone.
    && pip install --no-deps torchattacks==3.5.1

# No .git in the image: the code identity is the digest of these sources (evaluation/provenance.py). The commit the
# image was built from is recorded beside it: docker build --build-arg ROBUSTLAB_GIT_COMMIT=$(git rev-parse HEAD)
ARG ROBUSTLAB_GIT_COMMIT=
ENV ROBUSTLAB_GIT_COMMIT=${ROBUSTLAB_GIT_COMMIT}

RUN useradd --create-home --uid 1000 robustlab && mkdir -p /data/artifacts && chown -R robustlab /data
USER robustlab

ENV ROBUSTLAB_ARTIFACTS_DIR=/data/artifacts
EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
