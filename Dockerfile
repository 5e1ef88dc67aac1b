# syntax=docker/dockerfile:1
# Container image of dialnexa-exporter.
#   docker build -t dialnexa-exporter .        (or: podman build -t dialnexa-exporter .)
#   docker run --rm -p 10027:10027 --read-only -e DIALNEXA_API_KEY=... -e DIALNEXA_CAMPAIGN_IDS=... dialnexa-exporter
# Two stages: the build stage installs the package and its dependencies into a virtualenv; the
# final stage copies only that virtualenv onto the same base (same Python path), with no
# compiler, no pip and no source tree, and runs as a numeric non-root user.
#
# PYTHON_IMAGE is any image with python3 and its venv module: the official slim image by default,
# or one built from distribution packages (the test suite builds on Debian's python3). Only the
# interpreter's own path is relied on, through the virtualenv's symlink.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY exporter ./exporter
# The dependencies come from the lock file, each checked against its hashes, so the image holds
# the versions the tests ran against and nothing an index served in their place; the package
# itself then goes in without resolving anything. pip compiles the bytecode at install time, so
# the read-only root filesystem costs nothing at run time. pip and setuptools are not needed to
# run the exporter, so they stay behind.
# Builds behind a private index or a TLS-inspecting proxy pass their pip settings as build
# secrets, which never enter a layer or the image history (both optional: without them pip uses
# its defaults):
#   --secret id=pip.conf,src=<a pip.conf>   read by pip as /etc/pip.conf during this step only
#   --secret id=pip-ca,src=<a CA bundle>    at /run/secrets/pip-ca; point `cert` in that pip.conf here
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca \
    /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock \
    && /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && /opt/venv/bin/dialnexa-exporter --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="dialnexa-exporter" \
      org.opencontainers.image.description="Prometheus exporter for DialNexa outbound calling campaigns" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
# Numeric ids, so Kubernetes can verify runAsNonRoot without an /etc/passwd entry; the Helm chart
# runs the pod with the same ids.
USER 65532:65532
WORKDIR /
EXPOSE 10027
ENTRYPOINT ["dialnexa-exporter"]
