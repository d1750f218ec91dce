#!/usr/bin/env bash
# Serves the mixsup-monai bundles with MONAI Label's stock `monaibundle` sample app (monailabel 0.8.5).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    cat <<EOF
Usage: bash scripts/monailabel_app.sh --studies DIR [options] [-- extra monailabel start_server arguments]

Starts a MONAI Label server (stock 'monaibundle' sample app) that serves the bundles of this repo:
/infer/<bundle> on an image or tile, /infer/wsi/<bundle> on a whole slide (tiles in, DSA / ASAP / JSON
annotations out), /train/<bundle>.

  --studies DIR       images / slides the server lists and infers on (MONAI Label's local datastore: it
                      writes datastore_v2.json and labels/ into DIR, so DIR must be writable: a folder of
                      symlinks to read-only slides works); or a DSA API URL with MONAI_LABEL_DATASTORE=dsa
                                                                                      [required]
  --bundles LIST      comma-separated bundles of bundles/ to serve                    [lsr,mixsup,npl]
  --models-dir DIR    folder with trained bundle copies, DIR/<bundle>/models/model.pt (and its configs/,
                      used instead of the repo's when present); without it bundles/<bundle>/models/ is used
  --work-dir DIR      where the app is materialised: DIR/monaibundle, bundles in DIR/monaibundle/model/<bundle>
                                                       [\${XDG_CACHE_HOME:-\$HOME/.cache}/mixsup-monai/monailabel]
  --host HOST         address to bind                                                     [127.0.0.1]
  --port PORT         port                                                                [8000]
  --python PY         Python that has monailabel and mixsup-monai             [\$PYTHON or python]
  --dry-run           prepare the app and print the server command without starting it
  -h, --help          this message

SECURITY: MONAI Label has NO authentication by default (MONAI_LABEL_AUTH_ENABLE=false): anyone who can
reach the port can list and download the studies, run inference and start training. The server binds to
127.0.0.1 unless --host is given; only pass --host 0.0.0.0 on a trusted network, or behind a proxy, or
with MONAI Label's Keycloak authentication (MONAI_LABEL_AUTH_ENABLE=true, MONAI_LABEL_AUTH_REALM_URI=...).
It also answers cross-origin requests of any web page (CORS '*' unless MONAI_LABEL_CORS_ORIGINS is set), so
even on 127.0.0.1 a page open in a browser on this machine can call it: set MONAI_LABEL_CORS_ORIGINS='["http://..."]'.

Install the label stack first: bash scripts/install_label.sh
On CPU, send "multi_gpu": false (inside "params") with /infer/wsi requests. /train/<bundle> trains the bundle
on the datastore's labelled tiles joined with its datalist (README, MONAI Label section); the server runs in
DIR of --work-dir, so training writes its MLflow runs to <work-dir>/mlruns.
EOF
}

die() { echo "monailabel_app.sh: $*" >&2; exit 2; }

STUDIES="" BUNDLES="lsr,mixsup,npl" MODELS_DIR="" HOST="127.0.0.1" PORT="8000" DRY_RUN=0
WORK_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/mixsup-monai/monailabel"
PY="${PYTHON:-python}"
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --studies) STUDIES="${2:?--studies needs a folder}"; shift 2 ;;
        --bundles) BUNDLES="${2:?--bundles needs a list}"; shift 2 ;;
        --models-dir) MODELS_DIR="${2:?--models-dir needs a folder}"; shift 2 ;;
        --work-dir) WORK_DIR="${2:?--work-dir needs a folder}"; shift 2 ;;
        --host) HOST="${2:?--host needs an address}"; shift 2 ;;
        --port) PORT="${2:?--port needs a number}"; shift 2 ;;
        --python) PY="${2:?--python needs an executable}"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[ -n "$STUDIES" ] || { usage >&2; die "--studies is required"; }
case "$STUDIES" in
    http://*|https://*) ;;  # a remote datastore, e.g. DSA: MONAI_LABEL_DATASTORE=dsa --studies http://host:8080/api/v1
    *) [ -d "$STUDIES" ] || die "--studies $STUDIES is not a folder"
       STUDIES="$(cd "$STUDIES" && pwd)" ;;  # absolute: the server runs in the work dir
esac
case "$PORT" in ''|*[!0-9]*) die "--port must be a number, got '$PORT'" ;; esac
[ -z "$MODELS_DIR" ] || [ -d "$MODELS_DIR" ] || die "--models-dir $MODELS_DIR is not a folder"

# Each bundle's source: configs/, docs/, LICENSE from the trained copy when it has them, else from the repo;
# models/ from the trained copy (--models-dir) or the repo. Checked before the (slow) Python start.
IFS=',' read -r -a NAMES <<<"$BUNDLES"
SOURCES=() MODELS=()
for name in "${NAMES[@]}"; do
    [ -d "$REPO/bundles/$name/configs" ] || die "no bundle '$name' in $REPO/bundles"
    src="$REPO/bundles/$name"
    models="$src/models"
    if [ -n "$MODELS_DIR" ]; then
        [ -d "$MODELS_DIR/$name/models" ] || die "no $MODELS_DIR/$name/models (trained copy of bundle '$name')"
        models="$(cd "$MODELS_DIR/$name/models" && pwd)"
        [ ! -d "$MODELS_DIR/$name/configs" ] || src="$(cd "$MODELS_DIR/$name" && pwd)"
    fi
    [ -f "$models/model.pt" ] || die "bundle '$name' has no trained model $models/model.pt: train it, or pass --models-dir"
    SOURCES+=("$src") MODELS+=("$models")
done

# mixsup_monai must be importable by the server's bundle configs, whatever way the repo was installed.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# One Python start (importing the server takes seconds): check that the server imports, then materialise the
# stock sample app, copied out of the installed package (offline: `monailabel apps --download`).
APP="$WORK_DIR/monaibundle"
"$PY" - "$WORK_DIR" >/dev/null <<'PY' || exit 3
import os
import sys

try:
    import monailabel.app  # noqa: F401 -- the server and the dependencies it imports
except ImportError as error:
    print(f"monailabel_app.sh: MONAI Label's server is not importable ({error}): install it with "
          "'bash scripts/install_label.sh'", file=sys.stderr)
    sys.exit(3)
work = sys.argv[1]
if not os.path.isfile(os.path.join(work, "monaibundle", "main.py")):
    from monailabel.main import Main

    sys.argv = ["monailabel", "apps", "--download", "--name", "monaibundle", "--output", work]
    Main().run()
PY
WORK_DIR="$(cd "$WORK_DIR" && pwd)" APP="$(cd "$APP" && pwd)"  # absolute: the server runs in the work dir

# <app>/model/<bundle>: configs/, docs/, LICENSE linked; models/*.pt copied unless the app's copy is newer (a
# MONAI Label /train writes there), so that the server never writes into the repo or the trained copy.
for i in "${!NAMES[@]}"; do
    dst="$APP/model/${NAMES[$i]}"
    mkdir -p "$dst/models"
    for part in configs docs LICENSE; do
        [ -e "${SOURCES[$i]}/$part" ] || continue
        rm -rf "${dst:?}/$part"
        ln -s "${SOURCES[$i]}/$part" "$dst/$part"
    done
    for pt in "${MODELS[$i]}"/*.pt; do
        if [ "$dst/models/${pt##*/}" -nt "$pt" ]; then
            echo "keeping $dst/models/${pt##*/} (newer than $pt, e.g. from a MONAI Label /train)" >&2
        else
            cp -p "$pt" "$dst/models/"
        fi
    done
done

# zoo_source local: the bundles are local (the default 'monaihosting' lists the online zoo first);
# sam2 false: never fetch SAM2 weights even where the sam2 package is installed.
CMD=("$PY" -m monailabel.main start_server --app "$APP" --studies "$STUDIES"
     --conf models "$BUNDLES" --conf preload false --conf zoo_source local --conf sam2 false
     --host "$HOST" --port "$PORT" ${EXTRA[@]+"${EXTRA[@]}"})
echo "MONAI Label app: $APP (bundles: $BUNDLES); no authentication: http://$HOST:$PORT/ is open to whoever reaches it" >&2
if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "${CMD[@]}"
    echo
    exit 0
fi
# in the work dir: a /train run writes its MLflow store (mlruns/, relative to the working directory) there
cd "$WORK_DIR"
exec "${CMD[@]}"
