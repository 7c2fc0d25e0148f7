# The GPU worker image for Dataflow (--sdk_container_image) and Flink (--environment_config).
# Beam's SDK image carries the worker boot loader; PyPI's torch wheels carry their own CUDA
# libraries, and Dataflow's install-nvidia-driver option supplies the driver on the VM.
# BEAM_VERSION must equal the apache-beam pin in setup.py (a test checks it).
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python3.11_sdk:${BEAM_VERSION}

WORKDIR /opt/gridtsne
COPY setup.py constraints.txt README.md ./
COPY gridtsne ./gridtsne
COPY pipelines ./pipelines
COPY transforms ./transforms
RUN pip install --no-cache-dir -c constraints.txt . \
    && python -c "import torch, torchvision, timm, gridtsne; print('torch', torch.__version__)"

# The SDK image's entry point (/opt/apache/beam/boot) stays as it is.
