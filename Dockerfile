# The garrison image: a worker or a listener, depending on the command.
FROM python:3.11-slim

WORKDIR /app

# Dependencies in a layer of their own, rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
# The tracing extra too (the OpenTelemetry SDK), so GARRISON_TRACING_ENABLED works.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['tracing']))" > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt

# Then garrison itself, without touching the dependencies again.
COPY README.md LICENSE ./
COPY pipeline ./pipeline
COPY tables ./tables
COPY agents ./agents
COPY garrison ./garrison
COPY examples ./examples
RUN pip install --no-cache-dir --no-deps .

# Run as an unprivileged user that owns only the state folder.
RUN useradd --system --uid 10001 --home-dir /var/lib/garrison --shell /usr/sbin/nologin garrison \
 && mkdir -p /var/lib/garrison && chown garrison:garrison /var/lib/garrison
USER garrison
ENV GARRISON_DATA_DIR=/var/lib/garrison
VOLUME /var/lib/garrison
CMD ["garrison", "worker", "examples.chatbot.app"]
