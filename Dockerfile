# PeerTest Hub: one image for the API, the RQ worker and the scheduler.
#   docker build -t peertest-hub .
#   docker run ... peertest-hub                                  # API on :8000
#   docker run ... peertest-hub python -m workers.worker         # RQ worker
#   docker run ... peertest-hub python -m workers.scheduler      # periodic jobs
FROM python:3.13-slim

# Fails closed: an image started without ENVIRONMENT runs as production, which refuses dev
# secrets and simulation flags (app/config.py). Set ENVIRONMENT=staging for a trial.
ENV ENVIRONMENT=production \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MAIL_OUTBOX_DIR=/data/outbox

WORKDIR /srv/peertest

RUN groupadd --system --gid 10001 peertest \
 && useradd --system --uid 10001 --gid peertest --home-dir /srv/peertest --shell /usr/sbin/nologin peertest \
 && mkdir -p /data/outbox \
 && chown -R peertest:peertest /data

# Dependencies and code; constraints.txt pins every transitive version.
COPY pyproject.toml constraints.txt ./
COPY app ./app
COPY workers ./workers
RUN pip install -c constraints.txt . \
 && rm -rf build *.egg-info

USER peertest
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

# --no-proxy-headers: the app reads X-Forwarded-For itself, from FORWARDED_ALLOW_IPS only (uvicorn would
# otherwise trust loopback peers on its own).
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--no-proxy-headers"]
