# syntax=docker/dockerfile:1
#
# stream-aggregator: one production pod (`aggregator run`), configured by AGG_*
# environment variables (README, "Configuration"; k8s/base for the cluster).
#
#   docker build -t stream-aggregator:dev .
#   docker run --rm -p 8000:8000 stream-aggregator:dev demo --host 0.0.0.0
#
# Three stages; only the last one ships:
#   dashboard  the browser dashboard is plain ES modules and CSS, served as they
#              are: there is nothing to bundle or transpile. The stage checks
#              that every file index.html and the modules refer to exists, so a
#              broken reference fails the build instead of a browser.
#   build      the wheels: the project's (hatchling puts dashboard/ into it as
#              aggregator/_dashboard and compiles its C extension) and every
#              dependency's, from PyPI.
#   runtime    a venv installed from those wheels only, no pip, no compiler, no
#              caches; a numeric non-root user; read-only root filesystem ready.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS dashboard
WORKDIR /src/dashboard
COPY dashboard/ ./
RUN python <<'CHECK'
import pathlib, re, sys
root = pathlib.Path(".")
missing = []
html = (root / "index.html").read_text(encoding="utf-8")
for ref in re.findall(r'(?:src|href)="static/([^"]+)"', html):
    if not (root / ref).is_file():
        missing.append(f"index.html -> {ref}")
for module in sorted(root.glob("*.js")):
    for ref in re.findall(r'from\s+"\./([^"]+)"', module.read_text(encoding="utf-8")):
        if not (root / ref).is_file():
            missing.append(f"{module.name} -> {ref}")
if missing:
    sys.exit("dashboard: missing files: " + ", ".join(missing))
print("dashboard: every referenced file is present")
CHECK

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# A C compiler for the project's extension (aggregator/core/_native.c, the map
# stage's fold and roll-up; hatch_build.py compiles it into the wheel). Every
# dependency publishes binary wheels for CPython 3.11 on linux amd64/arm64.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md hatch_build.py ./
COPY aggregator/ aggregator/
COPY --from=dashboard /src/dashboard/ dashboard/
# AGG_NATIVE=required: a wheel without the extension fails the build here.
# Behind a proxy that re-signs TLS, pass its CA bundle as a build secret; it is
# used for this step only and never lands in a layer:
#   docker build --secret id=pip-cert,src=/path/to/ca-bundle.crt .
RUN --mount=type=secret,id=pip-cert,required=false \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
 && AGG_NATIVE=required pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# The user the manifests name (runAsUser 10001); no home, no login shell.
RUN groupadd --system --gid 10001 aggregator \
 && useradd --system --uid 10001 --gid aggregator --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin aggregator
# The wheels are bind-mounted, never copied: they leave no layer behind. The
# venv has no pip of its own (the base image's pip installs into it), and the
# base image's pip/setuptools/wheel are removed afterwards. Byte code is
# compiled now, as root, because the running container cannot write it.
# `python` here is the base image's: the venv goes on PATH only afterwards
# (with it first on PATH, the second `python` would be the venv's, which has
# no pip).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/aggregator \
 && python -m pip --python /opt/aggregator/bin/python install \
        --no-index --find-links=/wheels --no-cache-dir --disable-pip-version-check \
        stream-aggregator \
 && python -m pip uninstall --yes pip setuptools wheel \
 && rm -rf /root/.cache /tmp/*
ENV PATH=/opt/aggregator/bin:$PATH
USER 10001:10001
WORKDIR /opt/aggregator
EXPOSE 8000
# Exec form: the aggregator is PID 1 and receives SIGTERM itself (flush,
# commit, release the Lease, close websockets). It starts no child processes,
# so no init is needed to reap them.
ENTRYPOINT ["aggregator"]
# `aggregator run` by default; `docker run IMAGE demo` etc. for the others.
CMD ["run"]
