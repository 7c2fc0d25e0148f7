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
# [gpu]: nvImageCodec (with nvjpeg) beside torchvision's bundled nvjpeg, for the GPU path's
# decoder comparison; torch's PyPI wheels carry CUDA, Dataflow's install-nvidia-driver the driver.
RUN pip install --no-cache-dir -c constraints.txt ".[gpu]" \
    && python -c "import importlib.metadata as m, torch, torchvision, timm, gridtsne.batch_embed; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, \
      'nvimgcodec', m.version('nvidia-nvimgcodec-cu13'))"

# The SDK image's entry point (/opt/apache/beam/boot) stays as it is.
