# The services' image for docker-compose.yml; the command picks the service.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml alembic.ini ./
COPY shared shared
COPY services services
COPY migrations migrations
RUN pip install --no-cache-dir .
# Not root: the services need no privilege in the container.
RUN useradd --system --no-create-home --uid 10001 cl
USER cl
CMD ["python", "-m", "services.api"]
