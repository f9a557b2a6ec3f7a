# llm-proxy: a small, non-root image. Build: docker build -t llm-proxy .
# Run:   docker run -p 50051:50051 -v $PWD/proxy.yaml:/etc/llm-proxy/config.yaml:ro llm-proxy

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
COPY client ./client
COPY domain ./domain
COPY application ./application
COPY adapters ./adapters
COPY infrastructure ./infrastructure
# The tracing, redis and postgres extras are small and let operators turn tracing, shared
# limits (Redis) and the PostgreSQL usage ledger on by configuration alone.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install ./client '.[tracing,redis,postgres]'

FROM python:3.11-slim
# A fixed numeric id so that Kubernetes' runAsNonRoot can check it without a passwd lookup.
RUN useradd --uid 10001 --create-home --home-dir /home/app app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    # llm keeps its keys and logs here; mount a volume or pass keys as environment variables.
    LLM_USER_PATH=/home/app/.llm \
    LLM_PROXY_CONFIG=/etc/llm-proxy/config.yaml \
    LLM_PROXY_HEALTH_ADDRESS=127.0.0.1:50051
COPY --chown=app:app deploy/config.yaml /etc/llm-proxy/config.yaml
USER 10001
WORKDIR /home/app
EXPOSE 50051 9464
# Open files: one per client connection. The server raises its soft limit to the hard one at
# start and warns below 4,096; an image cannot set the hard limit, so run with
# `docker run --ulimit nofile=65536:65536` where the runtime's default is lower.
# The gRPC health service, asked by the proxy's own CLI: no extra probe binary in the image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "infrastructure.cli", "health"]
# Exec form: the server is PID 1's child-free self and receives SIGTERM/SIGHUP directly.
ENTRYPOINT ["python", "-m", "infrastructure.cli"]
CMD ["serve"]
