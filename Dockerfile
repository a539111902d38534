# The teaching-file node on the Orthanc team's official image.
#
#   docker compose build            (see the README, "Docker")
#
# The base tag is pinned: a new tag can change Orthanc, the Python plugin and the embedded
# Python at once, so moving it is a deliberate change (re-run tests/docker after it).
FROM orthancteam/orthanc:26.8.2

# The Python plugin embeds the image's system Python; compiled wheels (numpy, imagecodecs) must
# be installed for exactly that version, so the version is read from the plugin itself and the
# build stops if `python3` is another one. --break-system-packages: the image's Python is
# "externally managed" (PEP 668) and this is the interpreter Orthanc loads.
COPY docker/requirements.txt /opt/teachfile/docker/requirements.txt
RUN set -eu; \
    plugin=/usr/share/orthanc/plugins-available/libOrthancPython.so; \
    embedded=$(grep -ao 'libpython3\.[0-9]*' "$plugin" | head -n 1 | sed 's/^libpython//'); \
    system=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
    echo "Orthanc's Python plugin embeds Python ${embedded:-?}; python3 is $system"; \
    if [ -n "$embedded" ] && [ "$embedded" != "$system" ]; then \
      echo "python3 ($system) is not the Python the plugin embeds ($embedded)" >&2; exit 1; \
    fi; \
    python3 -m pip install --no-cache-dir --break-system-packages \
      -r /opt/teachfile/docker/requirements.txt

# The system OpenJPEG writes lossless JPEG 2000 with the code-block BYPASS style (faster to encode
# and to verify); without it the plugin falls back to imagecodecs' bundled OpenJPEG. Tesseract
# reads unruled captures for the pixel rules' OCR gate (without it they stay refused).
# native/threadstack.c: at least 8 MiB of stack for every thread (Debian's civetweb gives
# Orthanc's HTTP threads 100 KiB and GDCM's transcoding overflows it; see the README, "Two
# Orthanc lanes"). Not measured on this image's own build; raising a minimum is safe either way.
# native/restcall.c: a native plugin, listed first in orthanc.json's Plugins, that owns
# POST /instances (Explorer's refused upload fails with 400/422, a body above MaxBodyMegabytes
# gets 413 before it is read); built against Debian's orthanc-dev header (header only, no
# dependencies; the SDK is backward compatible, so any recent one fits this image's Orthanc).
COPY native/threadstack.c native/restcall.c /opt/teachfile/native/
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopenjp2-7 tesseract-ocr tesseract-ocr-eng \
       gcc libc6-dev orthanc-dev \
    && mkdir -p /opt/teachfile/lib \
    && cc -shared -fPIC -O2 -Wall -Wextra -Werror -o /opt/teachfile/lib/teachfile-threadstack.so \
       /opt/teachfile/native/threadstack.c -ldl \
    && cc -shared -fPIC -O2 -Wall -Wextra -Werror -o /opt/teachfile/lib/teachfile-restcall.so \
       /opt/teachfile/native/restcall.c \
    && apt-get purge -y gcc libc6-dev orthanc-dev && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/*

# The package is used in place (the entry script puts /opt/teachfile/plugin on sys.path), so the
# plugin, the CLI and the roster templates all come from this one copy.
COPY plugin/teachfile /opt/teachfile/plugin/teachfile
COPY plugin/teachfile_entry.py /opt/teachfile/plugin/teachfile_entry.py
COPY orthanc-config /opt/teachfile/orthanc-config
COPY docker/entrypoint.sh docker/secrets_to_config.py docker/healthcheck.py /opt/teachfile/docker/
COPY docker/teachfile /usr/local/bin/teachfile
# TCP_NODELAY: DCMTK then disables Nagle on the sockets Orthanc accepts; otherwise every C-STORE
# response waits ~40 ms for the sender's delayed ACK (see plugin/teachfile/cli/launcher.py).
ENV PYTHONPATH=/opt/teachfile/plugin \
    PYTHONDONTWRITEBYTECODE=1 \
    TCP_NODELAY=1 \
    LD_PRELOAD=/opt/teachfile/lib/teachfile-threadstack.so

# Fail the build, not the first C-STORE, if the plugin cannot import its dependencies.
RUN python3 -c "import pydicom, numpy, imagecodecs, yaml, jinja2, requests; \
import teachfile.reception.pipeline, teachfile.node.service, teachfile.node.keycheck, teachfile.reception.openjpeg as oj; \
print('teachfile imports OK, imagecodecs', imagecodecs.__version__, 'system OpenJPEG', oj.version())"

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python3", "/opt/teachfile/docker/healthcheck.py"]

# Setting ENTRYPOINT resets the base image's CMD: repeat it (the generated configuration).
ENTRYPOINT ["/opt/teachfile/docker/entrypoint.sh"]
CMD ["/tmp/orthanc.json"]
