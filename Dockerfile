FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY core core
COPY ingest_api ingest_api
COPY workers workers
COPY read_api read_api
COPY stratum stratum
COPY stratum_client stratum_client
COPY migrations migrations
RUN pip install --no-cache-dir .
USER nobody
