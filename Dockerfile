# syntax=docker/dockerfile:1
# The reconciler as a container: `reconciler run`, configured by RECONCILER_* variables
# (deploy/base/settings.env), data in the /data volume. Build: docker build -t reconciler .
#
# Two stages: the first installs the package exactly as the README's set-up command does
# (a venv and an editable install with the `load` extra, at constraints.txt's versions); the
# second is the same slim base plus that directory, copied to the same path (an editable
# install points at its source, and a venv at its own location), so no pip cache and no
# build leftovers ship. The base is pinned by version; pin its digest too
# (FROM python:3.11.14-slim-bookworm@sha256:...) if your registry policy asks for it.

FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/reconciler
COPY pyproject.toml README.md constraints.txt ./
COPY reconciler ./reconciler
RUN python3 -m venv .venv && .venv/bin/pip install -e '.[load]' -c constraints.txt
# Nothing at run time needs pip or setuptools (the editable finder is a plain module):
# drop them from the venv, then compile once here, as the root filesystem is read-only later.
RUN .venv/bin/python -m pip uninstall --yes pip setuptools \
 && .venv/bin/python -m compileall -q reconciler .venv/lib


FROM python:3.11.14-slim-bookworm

ENV PATH=/opt/reconciler/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/reconciler \
    RECONCILER_DATA_DIR=/data \
    RECONCILER_API_LISTEN=0.0.0.0:8080 \
    RECONCILER_LOG_FORMAT=json

# openssh-client is the one runtime package: its ssh-keygen verifies signed approvals
# (approval_signers, `ssh-keygen -Y verify`), as git itself does. No recommends, no lists kept.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends openssh-client \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 reconciler \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/reconciler --create-home \
        --shell /usr/sbin/nologin reconciler \
 && mkdir -p /data \
 && chown 10001:10001 /data

COPY --from=build /opt/reconciler /opt/reconciler

USER 10001:10001
WORKDIR /home/reconciler
VOLUME ["/data"]
EXPOSE 8080

ENTRYPOINT ["reconciler", "run"]
