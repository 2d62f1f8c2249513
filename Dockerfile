FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY perennial ./perennial
COPY workflows ./workflows
COPY activities ./activities
COPY client ./client
COPY worker.py ./
RUN pip install --no-cache-dir .
USER nobody
CMD ["perennial", "worker"]
