# Vigil on CPU. The CUDA image, health check and compose stack come with the deployment work.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos protos
COPY server server
COPY telemetry telemetry
COPY clients clients
RUN pip install --no-cache-dir . && useradd --create-home vigil
USER vigil
ENV VIGIL_HOST=0.0.0.0 VIGIL_GRPC_PORT=8001 VIGIL_HTTP_PORT=8002
EXPOSE 8001 8002
CMD ["python", "-m", "server"]
