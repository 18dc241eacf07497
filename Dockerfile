# Image for the Kubeflow / Vertex runner: the verified stack plus mtrec, on Python 3.11.
#   docker build -t REGISTRY/mtrec:TAG . && docker push REGISTRY/mtrec:TAG
#   mtrec compile-kubeflow --image REGISTRY/mtrec:TAG --pipeline-root gs://BUCKET/mtrec
# KFP runs each TFX component in this image through TFX's own container entrypoint.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 TF_USE_LEGACY_KERAS=1
WORKDIR /opt/mtrec

# Same two-step install as `make install` (see README: "Why a two-step install").
COPY requirements/ requirements/
RUN pip install pip==24.2 \
 && pip install -r requirements/stack.txt -c requirements/constraints.txt \
 && pip install --no-deps --ignore-requires-python tfx==1.16.0 ml-pipelines-sdk==1.16.0

COPY setup.py pyproject.toml README.md ./
COPY mtrec/ mtrec/
COPY pipeline/ pipeline/
COPY models/ models/
COPY components/ components/
COPY serving/ serving/
# A regular (non-editable) install: the image runs from site-packages/mtrec, not this folder.
RUN pip install --no-deps . && cd / && rm -rf /opt/mtrec \
 && python -c "import tfx, tensorflow_recommenders, mtrec.models.training, mtrec.data.build, mtrec.components.example_gen"
