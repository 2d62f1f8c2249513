# The Perennial image: the worker (the default command), the gateway (`perennial gateway`) and
# the codec server (`perennial codec-server`); docker-compose.yml runs each with its own
# command and health check. docs/deployment.md says how.

# ---- build: the one wheel, from the folders pyproject.toml maps into the package `perennial`
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY perennial ./perennial
COPY workflows ./workflows
COPY activities ./activities
# client/ holds the gateway and its static files (package-data), and the codec server.
COPY client ./client
# perennial/worker.py is a link to it.
COPY worker.py ./
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

# ---- run: the wheel and its dependencies (the gateway's and the codec server's included)
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /tmp/wheels
RUN pip install "$(ls /tmp/wheels/*.whl)[otel]" && rm -rf /tmp/wheels
COPY deploy/healthcheck.py /usr/local/bin/perennial-healthcheck
# A user of its own, with a fixed uid: mounted key and tokens files must be readable by 10001.
RUN chmod 0755 /usr/local/bin/perennial-healthcheck \
    && groupadd --system --gid 10001 perennial \
    && useradd --system --uid 10001 --gid perennial --create-home --home-dir /home/perennial \
       --shell /usr/sbin/nologin perennial
USER 10001:10001
WORKDIR /home/perennial
# The gateway and the codec server (their default ports); the worker listens on nothing.
EXPOSE 8000 8081
# No HEALTHCHECK here: each service checks itself differently (docker-compose.yml).
CMD ["perennial", "worker"]
