# syntax=docker/dockerfile:1
# Vigil: one image for CPU and NVIDIA GPU hosts (docs/deployment.md).
#   docker build -t vigil .
#   docker run --rm -p 8001:8001 -p 8002:8002 --stop-timeout 30 vigil             # CPU host
#   docker run --rm --gpus all -p 8001:8001 -p 8002:8002 --stop-timeout 30 vigil  # GPU host
#
# Why a slim Python base and not nvidia/cuda: onnxruntime-gpu 1.31.1 is built for CUDA 13.0 and cuDNN 9
# ("Require cuDNN 9.* and CUDA 13.*"). Its `cuda` extra pins nvidia-cuda-runtime ~=13.0, nvidia-cuda-nvrtc ~=13.0,
# nvidia-cufft ~=12.0 and nvidia-curand ~=10.0; its `cudnn` extra pins nvidia-cudnn-cu13 ~=9.0, which brings
# nvidia-cublas 13. Installing onnxruntime-gpu[cuda,cudnn] therefore gets the very user-space libraries ONNX Runtime
# was built against, as wheels; an nvidia/cuda:13.x-cudnn-runtime base would add a second copy of them (and a
# Python of its own). The one thing no wheel carries is the driver (libcuda.so.1, libnvidia-ml.so.1): the NVIDIA
# Container Toolkit mounts it from the host when the container gets a GPU (--gpus, or a compose device
# reservation). The host driver must support CUDA 13 (R580 or newer). Without a GPU or driver, ONNX Runtime cannot
# create the CUDA provider and the models run on the CPU (server/models/cuda.py finds that out and logs it once).

ARG PYTHON_VERSION=3.11
# Pinned: LD_LIBRARY_PATH below names the CUDA 13 wheel layout that this version's extras install.
ARG ONNXRUNTIME_VERSION=1.31.1

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ARG ONNXRUNTIME_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/vigil
# ONNX Runtime with its CUDA and cuDNN wheels (about 2 GB) first, in a layer of its own that code changes keep.
# hadolint ignore=DL3059
RUN /opt/vigil/bin/pip install "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos protos
COPY server server
COPY telemetry telemetry
COPY clients clients
# The wheel carries the bundled model (server/models/default_models) as package data.
RUN /opt/vigil/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/vigil/bin/pip install /wheels/vigil-*.whl "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_VERSION}"

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG PYTHON_VERSION
# Where the CUDA 13 and cuDNN wheels put their libraries; ONNX Runtime looks for them on the loader's path only.
ARG NVIDIA_LIBS=/opt/vigil/lib/python${PYTHON_VERSION}/site-packages/nvidia
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/vigil vigil \
    && install -d -o vigil -g vigil /models /data
COPY --from=builder /opt/vigil /opt/vigil
# Settings come from VIGIL_* variables only (README's Settings table). VIGIL_MODELS_DIR is left at the bundled
# model; mount a repository at /models and set VIGIL_MODELS_DIR=/models to serve your own.
# NVIDIA_DRIVER_CAPABILITIES: compute for CUDA, utility for NVML (GPU metrics). NVIDIA_VISIBLE_DEVICES is left
# unset, so a container sees a GPU only when it asks for one.
# VIGIL_STORE__URL: the prediction log (every classifier prediction and its feedback) in a SQLite file on the /data
# volume, owned by the vigil user, so it outlives the container. Containers on one host may share that volume; a
# fleet on several hosts sets a postgresql:// URL instead (docs/scaling.md). Never put /data on a network filesystem.
ENV PATH=/opt/vigil/bin:$PATH \
    LD_LIBRARY_PATH=${NVIDIA_LIBS}/cu13/lib:${NVIDIA_LIBS}/cudnn/lib \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIGIL_HOST=0.0.0.0 \
    VIGIL_GRPC_PORT=8001 \
    VIGIL_HTTP_PORT=8002 \
    VIGIL_STORE__URL=sqlite:////data/vigil.db
# Numeric, so that Kubernetes runAsNonRoot can check it.
USER 10001:10001
WORKDIR /home/vigil
VOLUME /models /data
EXPOSE 8001 8002
# The gRPC health service: `vigil health` exits 0 only when SERVING. It asks VIGIL_TARGET (default: this
# container's gRPC port). With VIGIL_SECURITY__TLS_CERT_FILE set it speaks TLS and trusts VIGIL_TLS_CA, else the
# server's own certificate; the certificate must name the target's host (127.0.0.1, or set VIGIL_TARGET).
# Under mutual TLS, VIGIL_TLS_CERT and VIGIL_TLS_KEY give it a client certificate.
# (Shell form on purpose: the command needs the shell's variable defaults.)
# hadolint ignore=DL3025
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD if [ -n "$VIGIL_SECURITY__TLS_CERT_FILE" ]; then \
            set -- --tls --ca-file "${VIGIL_TLS_CA:-$VIGIL_SECURITY__TLS_CERT_FILE}"; \
        fi; \
        exec vigil "$@" health --target "${VIGIL_TARGET:-127.0.0.1:${VIGIL_GRPC_PORT:-8001}}" --timeout 5
# SIGTERM starts the graceful shutdown: calls get VIGIL_SHUTDOWN_GRACE_SECONDS (10 s) to finish, then telemetry is
# flushed; the process gives up 15 s past the grace period. The stop timeout (docker --stop-timeout, compose
# stop_grace_period, Kubernetes terminationGracePeriodSeconds) must exceed both together: 30 s with the defaults.
STOPSIGNAL SIGTERM
CMD ["vigil", "serve"]
