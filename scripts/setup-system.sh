#!/usr/bin/env bash
# Installs the Debian packages stemkit needs: FluidSynth and General MIDI soundfonts for the
# song generator, ffmpeg for m4a/aac/mp4 input, chromium for the web app's browser tests.
# Idempotent; asks apt only for what is missing.
set -euo pipefail

PYTHON=${PYTHON:-python3}
need=()
# Debian's own python3 ships venv's pip bootstrap separately.
"$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
ldconfig -p 2>/dev/null | grep -q libfluidsynth || need+=(libfluidsynth3 fluidsynth)
[ -e /usr/share/sounds/sf2/TimGM6mb.sf2 ] || need+=(timgm6mb-soundfont)
# more General MIDI timbres for the generator; MuseScore's is reserved for held-out songs
[ -e /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
[ -e /usr/share/sounds/sf3/MuseScore_General_Full.sf3 ] || need+=(musescore-general-soundfont)
# the speech synthesizer behind the generator's sung vocals
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
# headless browser of the web app's browser tests (Playwright drives it; it downloads none)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "stemkit: missing system packages: ${need[*]}" >&2
    echo "stemkit: install them as root (Debian: apt-get install ${need[*]}) and run make again." >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "stemkit: installed ${need[*]}"
