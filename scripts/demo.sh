#!/usr/bin/env bash
# make demo: a tether-cloud, a tether-edge and a simulated device mapper on the embedded defaults,
# a sample namespace of objects arriving on the edge, and a device twin round trip. Ctrl-C stops
# everything. State lives in ./data/demo (wiped at start); logs are there too.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=./data/demo
API=http://127.0.0.1:10080
META=http://127.0.0.1:10550
BIN=./bin
KUBECTL=$(command -v kubectl || true)

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
step() { printf '\033[36m==>\033[0m %s\n' "$*"; }
fail() { printf '\033[31mdemo failed:\033[0m %s\n' "$*" >&2; exit 1; }

for port in 10000 10002 10080 10550 1883; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    fail "port $port is already in use; stop whatever holds it (an earlier demo?) and run make demo again"
  fi
done

rm -rf "$DATA"
mkdir -p "$DATA"
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  step "stopping (SIGTERM to every process, then waiting for each)"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  step "stopped; state and logs are in $DATA"
  exit 0
}
trap cleanup EXIT INT TERM

wait_ready() { # url, what
  for _ in $(seq 1 200); do
    if curl -fs "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  fail "$2 did not become ready; see $DATA/*.log"
}

# resource path of each example file, for a plain curl POST of its YAML
path_of() {
  case "$1" in
    *namespace*) echo /api/v1/namespaces ;;
    *configmap*) echo /api/v1/namespaces/demo/configmaps ;;
    *secret*) echo /api/v1/namespaces/demo/secrets ;;
    *pod*) echo /api/v1/namespaces/demo/pods ;;
    *endpointslice*) echo /apis/discovery.k8s.io/v1/namespaces/demo/endpointslices ;;
    *service*) echo /api/v1/namespaces/demo/services ;;
    *devicemodel*) echo /apis/devices.kubeedge.io/v1beta1/namespaces/demo/devicemodels ;;
    *device*) echo /apis/devices.kubeedge.io/v1beta1/namespaces/demo/devices ;;
  esac
}

names() { # url → the names of the listed items (metadata keys are sorted: name, then namespace)
  curl -fs "$1" | grep -o '"name":"[^"]*","namespace":"demo"' | sed 's/"name":"\([^"]*\)".*/\1/' | sort -u | tr '\n' ' '
}

bold "1. the cloud"
step "tether-cloud serve --data-dir $DATA/cloud (hub :10000, join :10002, API 127.0.0.1:10080)"
$BIN/tether-cloud serve --data-dir "$DATA/cloud" --advertise-address 127.0.0.1 --log-format console >"$DATA/cloud.log" 2>&1 &
pids+=($!)
wait_ready "$API/readyz" "the cloud"

bold "2. an edge node joins"
TOKEN=$($BIN/tether-cloud token create --node edge-1 --ttl 1h)
step "tether-cloud token create --node edge-1  →  ${TOKEN:0:20}…"
step "tether-edge --node-name edge-1 --cloud 127.0.0.1:10000 --join https://127.0.0.1:10002 --token … --data-dir $DATA/edge"
$BIN/tether-edge --node-name edge-1 --cloud 127.0.0.1:10000 --join https://127.0.0.1:10002 --token "$TOKEN" \
  --data-dir "$DATA/edge" --log-format console >"$DATA/edge.log" 2>&1 &
pids+=($!)
wait_ready "$META/readyz" "the edge"
step "the Node in the cloud: $(curl -fs $API/api/v1/nodes/edge-1 | grep -o '"type":"Ready"[^}]*\|"status":"True","type":"Ready"' | head -1)"

bold "3. a sample namespace of objects, applied to the cloud API"
for f in examples/demo/*.yaml; do
  code=$(curl -s -o "$DATA/last-response.json" -w '%{http_code}' -X POST -H 'Content-Type: application/yaml' \
    --data-binary @"$f" "$API$(path_of "$f")")
  [ "$code" = 201 ] || fail "POST $f: HTTP $code: $(cat "$DATA/last-response.json")"
  step "created $(basename "$f" .yaml | cut -d- -f2-)"
done

bold "4. what arrived on the edge (its own metaserver, read from its bbolt store)"
for _ in $(seq 1 100); do
  [ -n "$(names "$META/apis/devices.kubeedge.io/v1beta1/namespaces/demo/devices")" ] && break
  sleep 0.1
done
for r in api/v1/namespaces/demo/pods api/v1/namespaces/demo/configmaps api/v1/namespaces/demo/secrets \
         api/v1/namespaces/demo/services apis/discovery.k8s.io/v1/namespaces/demo/endpointslices \
         apis/devices.kubeedge.io/v1beta1/namespaces/demo/devices apis/devices.kubeedge.io/v1beta1/namespaces/demo/devicemodels; do
  printf '   %-16s %s\n' "$(basename "$r")" "$(names "$META/$r")"
done
if [ -n "$KUBECTL" ]; then
  step "kubectl --server $META get pods,devices -n demo"
  "$KUBECTL" --server "$META" get pods,devices -n demo 2>&1 | sed 's/^/   /' || true
fi

bold "5. a device twin round trip"
step "tether-sim mapper --device demo/thermometer (a simulated KubeEdge mapper on the edge's MQTT broker)"
$BIN/tether-sim mapper --mqtt 127.0.0.1:1883 --device demo/thermometer --every 2s >"$DATA/mapper.log" 2>&1 &
pids+=($!)
DEV=$API/apis/devices.kubeedge.io/v1beta1/namespaces/demo/devices/thermometer
reported() { curl -fs "$DEV" | grep -o '"reported":{"metadata":{[^}]*},"value":"[^"]*"' | grep -o '"value":"[^"]*"' | head -1; }
for _ in $(seq 1 100); do [ -n "$(reported)" ] && break; sleep 0.2; done
[ -n "$(reported)" ] || fail "the mapper's report did not reach Device.status; see $DATA/mapper.log and $DATA/edge.log"
step "the device reports; Device.status.twins in the cloud shows reported $(reported)"
step "the cloud sets the desired temperature to 25 (merge patch of spec.properties)"
curl -fs -X PATCH -H 'Content-Type: application/merge-patch+json' "$DEV" \
  -d '{"spec":{"properties":[{"name":"temperature","desired":{"value":"25"}}]}}' >/dev/null
for _ in $(seq 1 150); do [ "$(reported)" = '"value":"25"' ] && break; sleep 0.2; done
[ "$(reported)" = '"value":"25"' ] || fail "the desired value did not come back as reported; see $DATA/mapper.log"
grep -m1 "delta" "$DATA/mapper.log" | sed 's/^/   /'
step "the mapper applied the delta and reported 25; the cloud now shows:"
if [ -n "$KUBECTL" ]; then
  "$KUBECTL" --server "$API" get device thermometer -n demo -o yaml 2>&1 | sed -n '/^status:/,$p' | sed 's/^/   /'
else
  curl -fs "$DEV" | grep -o '"status":{.*' | sed 's/^/   /'
fi

bold "Try next (another terminal):"
cat <<EOF
   kubectl --server $API get nodes,pods,devices -A          # the cloud API
   kubectl --server $META get pods,configmaps -n demo         # the edge, from its own store
   kill -STOP \$(pgrep -f 'tether-cloud serve')  # or stop the cloud: the edge keeps serving
   kubectl --server $META get device thermometer -n demo -o yaml   # its status: what the mapper last reported, cloud or not
   mosquitto_sub -h 127.0.0.1 -t '\$hw/events/device/demo/thermometer/#' -v
   curl -s $API/metrics | grep tether_cloud_hub             # Prometheus metrics; also $META/metrics
   tail -f $DATA/*.log
   kubectl --server $API delete namespace demo               # its Pod and Device leave the edge too
Ctrl-C stops everything.
EOF
while true; do sleep 1; done
