# The service as a container: a slim Python, the package installed from this repository at the versions
# of constraints.txt (as `make install` does), run as a non-root user.
# Build: docker build -t tornado-rate-limiter:0.2.0 .
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PORT=8080
WORKDIR /src
COPY . /src
RUN python -m pip install --no-cache-dir -c /src/constraints.txt /src && useradd --uid 10001 --no-create-home limiter
WORKDIR /
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/livez', timeout=2)"
CMD ["tornado-rate-limiter"]
