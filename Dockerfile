# The model zoo's images, from one file:
#   docker build -t modelzoo/modelzoo:0.1.0 .
#       the default (last) stage: the container in which `python dlrm/train.py --bf16` runs (and
#       `python wide_and_deep/train.py`), one process, no Horovod; also the image of the
#       parameter-server TFJobs (*/distribute_k8s/distribute_k8s_*.yaml, through distribute_k8s/launch.py).
#   docker build --target horovod -t modelzoo/modelzoo-horovod:0.1.0 .
#       the same plus Horovod 0.28.1 (gloo, no MPI) and a non-root sshd: the image of the Kubeflow
#       MPI-operator jobs in */distribute_k8s/horovod_*.yaml.

# --- base: Python and the pinned runtime requirements (TensorFlow, NumPy), shared by every stage.
FROM python:3.11.7-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

# jemalloc, the allocator that distribute_k8s/launch.py preloads for MEM_USAGE_STRATEGY=jemalloc
# (/usr/lib/x86_64-linux-gnu/libjemalloc.so.2; the parameter-server TFJobs set it). Debian bookworm's
# version: when a Debian point release replaces it, `apt-cache policy libjemalloc2` gives the new one.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2=5.3.0-1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/modelzoo
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# --- horovod-build: compiles Horovod against the installed TensorFlow into a wheel. The compilers
# stay in this stage; only the wheel goes on. Debian bookworm package versions: when a Debian point
# release replaces one, `apt-cache policy PACKAGE` in the base image gives the new one.
FROM base AS horovod-build

RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake=3.25.1-1 g++=4:12.2.0-3 make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*

# Gloo controller only: no MPI (the MPI operator's launcher runs horovodrun --gloo over ssh), no
# PyTorch, no MXNet. --no-build-isolation: Horovod's setup.py builds against this TensorFlow.
ENV HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
# setuptools and wheel: the versions this repository's .venv built horovod 0.28.1 with.
RUN pip install --no-cache-dir setuptools==65.5.0 wheel==0.48.0 \
    && pip wheel --no-cache-dir --no-build-isolation --no-deps --wheel-dir /wheels horovod==0.28.1

# --- horovod: the runtime plus Horovod and sshd, for the MPI operator's launcher and workers.
FROM base AS horovod

# openssh-client for horovodrun in the launcher, openssh-server for the workers. The package's
# host keys are removed: sshd uses the per-job key the operator mounts (distribute_k8s/ssh/).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        openssh-client=1:9.2p1-2+deb12u10 openssh-server=1:9.2p1-2+deb12u10 \
    && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*

# Horovod's own dependencies, pinned, then the wheel built above (it needs no compiler).
COPY --from=horovod-build /wheels /tmp/wheels
RUN pip install --no-cache-dir cloudpickle==3.1.2 psutil==7.2.2 pyyaml==6.0.3 packaging==26.3 \
    && pip install --no-cache-dir --no-deps /tmp/wheels/horovod-0.28.1-*.whl \
    && rm -rf /tmp/wheels

COPY distribute_k8s/ssh/sshd_config /etc/ssh/sshd_config_modelzoo
COPY distribute_k8s/ssh/ssh_config /etc/ssh/ssh_config.d/modelzoo.conf
COPY modelzoo/ modelzoo/
COPY dlrm/ dlrm/
COPY wide_and_deep/ wide_and_deep/
COPY dcn_v2/ dcn_v2/
COPY lr/ lr/
COPY fm/ fm/
COPY deepfm/ deepfm/
COPY din/ din/
COPY esmm/ esmm/
COPY mmoe/ mmoe/
COPY ple/ ple/
COPY gdmix_lr/ gdmix_lr/
COPY data/ data/
COPY distribute_k8s/ distribute_k8s/
# uid 1000, home /home/modelzoo: the MPIJobs' runAsUser and sshAuthMountPath (/home/modelzoo/.ssh).
RUN useradd --create-home --uid 1000 --shell /bin/bash modelzoo \
    && mkdir -p result data/criteo \
    && chown -R modelzoo:modelzoo result data
USER 1000

# The MPIJobs set the command (horovodrun in the launcher, sshd in the workers); by itself the
# image reports how Horovod was built (Gloo and TensorFlow checked, MPI not).
CMD ["horovodrun", "--check-build"]

# --- runtime (default): one process, no Horovod; the image `docker build .` makes.
FROM base AS runtime

COPY modelzoo/ modelzoo/
COPY dlrm/ dlrm/
COPY wide_and_deep/ wide_and_deep/
COPY dcn_v2/ dcn_v2/
COPY lr/ lr/
COPY fm/ fm/
COPY deepfm/ deepfm/
COPY din/ din/
COPY esmm/ esmm/
COPY mmoe/ mmoe/
COPY ple/ ple/
COPY gdmix_lr/ gdmix_lr/
COPY data/ data/
# distribute_k8s/launch.py: the entry point of the TFJobs in */distribute_k8s/distribute_k8s_*.yaml.
COPY distribute_k8s/ distribute_k8s/
RUN useradd --create-home --uid 1000 modelzoo \
    && mkdir -p result data/criteo \
    && chown -R modelzoo:modelzoo result data
USER 1000

ENTRYPOINT ["python"]
CMD ["dlrm/train.py", "--bf16"]
