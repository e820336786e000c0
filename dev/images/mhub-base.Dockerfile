# A local approximation of MHub's base image (mhubai/base:latest), built where no registry is
# reachable. Build context: MHub's base image folder (vendor/mhub/mhub-base/base). Same
# layout as MHub's (base/dockerfiles/Dockerfile there): /app with data/, utility/config,
# xmodules, xcollections; buildutils/ in /app; mhub.* scripts in /usr/bin; mhubio's GitHub head
# (wheel built unchanged, mounted at /vendor) in the uv environment /app/.venv. Differences: Debian
# bookworm (made with mmdebstrap) instead of ubuntu:20.04; uv from PyPI instead of its web
# installer; no medcmp (it carries no licence).
ARG BASE_IMAGE=localhost/mhub-cpu-base:bookworm
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
RUN mkdir -p /app/data /app/data/input_data /app/data/output_data /app/data/reference_data \
             /app/utility/config /app/xmodules /app/xcollections
WORKDIR /app

# MHub's system packages (panimg needs libvips and, to build pyvips, Python's headers).
RUN apt-get update && apt-get install -y --no-install-recommends \
      wget curl jq gcc unzip sudo git tree clang python3-dev \
      libopenslide-dev libvips-dev plastimatch ffmpeg libsm6 libxext6 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# uv trusts the system's CA store (mounted at build time), as pip does here; inherited by model images.
ENV UV_SYSTEM_CERTS=1 UV_NATIVE_TLS=1

# uv (from PyPI), then Python 3.11 in /app/.venv with mhubio's head and segdb 0.0.4 from /vendor.
RUN python -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir uv && ln -s /opt/uv/bin/uv /usr/local/bin/uv
RUN uv venv -p 3.11 \
 && uv pip install --no-cache pip \
 && ln -s $(uv run which pip) /usr/bin/pip3 \
 && uv pip install --no-cache --find-links /vendor mhubio==0.0.3

COPY buildutils /app/buildutils
COPY bin/ /usr/bin/
COPY configs/ /app/utility/config/
COPY collections.json /app/xcollections/collections.json
RUN chmod +x /usr/bin/mhub.*

ENV PYTHONPATH="/app"
ENTRYPOINT [ "mhub.run" ]
CMD ["--utility"]
