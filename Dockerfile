# The services' image for docker-compose.yml; the command picks the service.
# The base image is pinned by digest (the tag says what it is; the digest is what is pulled);
# README "Deployment and security" says how to move it to a newer build.
FROM python:3.11.16-slim-trixie@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
# A container started without settings runs as production: ingest then refuses the published
# local-dev-key and short keys, the scorer crash points (README "Deployment and security").
ENV CL_ENV=production \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# Every package, its dependencies and the build backend, from requirements.lock (scripts/lock.sh):
# exact versions, each file checked against its hash.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml alembic.ini ./
COPY shared shared
COPY services services
COPY migrations migrations
# The project itself, with nothing more fetched: its dependencies are all installed above.
RUN pip install --no-deps --no-build-isolation --no-index .
# Not root: the services need no privilege in the container.
RUN useradd --system --no-create-home --uid 10001 cl
USER cl
CMD ["python", "-m", "services.api"]
