#!/usr/bin/env bash
# A three-node RabbitMQ cluster in containers of the local image (fp-local/rabbitmq:3.10, built by
# deploy/docker/local-images.sh when missing), on a private docker network of its own, for
# services that run as host processes: they reach the nodes at their container addresses (a docker
# bridge network is routable from its host). The test of issue #11 (crates/fp-testkit/tests/
# rabbitmq_cluster.rs) runs its faults with it; by hand:
#
#   deploy/docker/rabbitmq-cluster.sh up          # start, cluster, wait for three running nodes
#   deploy/docker/rabbitmq-cluster.sh urls        # the broker.url of the services (every node)
#   deploy/docker/rabbitmq-cluster.sh status      # rabbitmq-diagnostics cluster_status
#   deploy/docker/rabbitmq-cluster.sh stop 2      # docker stop of node 2 (start 2: again)
#   deploy/docker/rabbitmq-cluster.sh cut 3       # node 3 off the network (heal 3: back on it)
#   deploy/docker/rabbitmq-cluster.sh wait        # until three nodes run in one cluster again
#   deploy/docker/rabbitmq-cluster.sh down        # containers, their volumes and the network
#
# The nodes form one cluster with `rabbitmqctl join_cluster` (deterministic, unlike peer discovery
# racing three nodes started at once) and share an Erlang cookie made at `up`. Partition handling is
# pause_minority: a node that can see only a minority of the cluster stops serving clients, so
# services connected to it fail over to the majority, where the quorum queues keep their leaders; with
# `ignore` it would keep accepting connections it cannot serve, and the metadata store (Mnesia on
# 3.10) would stay split after the heal until someone restarted a node.
#
# Environment: FP_RMQ_CLUSTER (name of the containers and network, default fp-rmq-cluster; a test
# uses one of its own), FP_RMQ_CLUSTER_USER / FP_RMQ_CLUSTER_PASSWORD (the services' login, default
# fp / fp-cluster), FP_RMQ_CLUSTER_DLX_CONFIRM_TIMEOUT_MS (default 10000, above),
# FP_RMQ_CLUSTER_POLL_INTERVAL (seconds between looks while waiting, default 3),
# FP_RMQ_CLUSTER_SUBNET (default 172.30.54.0/24, which the compose test's
# 172.30.53.0/24 does not overlap; another free 172.30.x.0/24 if it is taken).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cluster=${FP_RMQ_CLUSTER:-fp-rmq-cluster}
network="$cluster-net"
image=${FP_RABBITMQ_IMAGE:-fp-local/rabbitmq:3.10}
user=${FP_RMQ_CLUSTER_USER:-fp}
password=${FP_RMQ_CLUSTER_PASSWORD:-fp-cluster}
preferred_subnet=${FP_RMQ_CLUSTER_SUBNET:-172.30.54.0/24}
nodes=(1 2 3)
# Seconds until a node that stopped answering is considered gone (Erlang's net_ticktime; 60 by
# default, i.e. 45 to 75 s): a cut-off node notices that it is in the minority, and pauses, within
# 7.5 to 12.5 s. The CLI tools get the same value, since both ends of a connection tick.
net_ticktime=${FP_RMQ_CLUSTER_NET_TICKTIME:-10}
# Milliseconds before a quorum queue's dead-letter worker sends again a message its target queue has
# not confirmed (at-least-once dead-lettering: how the delay queues hand their expired messages
# to the retry queue). RabbitMQ's default, 180 s, held every message that expired while a
# partition moved the retry queue's leader for three minutes after the heal. A resend of a message
# the target did take but whose confirm was lost leaves it twice in the retry queue: at least once,
# as everywhere else. 10 s is far above a healthy cluster's confirm time (milliseconds).
dlx_confirm_timeout_ms=${FP_RMQ_CLUSTER_DLX_CONFIRM_TIMEOUT_MS:-10000}
started=$SECONDS

say() { printf '[rabbitmq-cluster %s %3d s] %s\n' "$cluster" "$((SECONDS - started))" "$*" >&2; }
fail() {
  say "FAILED: $*"
  exit 1
}

container() { printf '%s-%s' "$cluster" "$1"; }
node_name() { printf 'rabbit@%s' "$(container "$1")"; }
# Fixed per node (.11, .12, .13 of the network's /24), so a node restarted or put back on the
# network is where the services' broker.url says it is.
address() {
  local subnet
  subnet=$(docker network inspect --format '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$network") ||
    fail "no network $network: \`$0 up\` first"
  printf '%s.1%s' "${subnet%.*}" "$1"
}
check_node() {
  case "${1:-}" in
    1 | 2 | 3) ;;
    *) fail "name a node: 1, 2 or 3 (got '${1:-}')" ;;
  esac
}

# A /24 no docker network on this machine overlaps: the preferred one if it is free.
free_subnet() {
  local networks
  mapfile -t networks < <(docker network ls -q)
  docker network inspect --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}' "${networks[@]}" |
    python3 -c '
import ipaddress, sys
preferred = ipaddress.ip_network(sys.argv[1])
taken = [ipaddress.ip_network(s) for s in sys.stdin.read().split() if ":" not in s]
candidates = [preferred] + [ipaddress.ip_network(f"172.30.{i}.0/24") for i in range(54, 256)]
free = [n for n in candidates if not any(n.overlaps(t) for t in taken)]
if not free:
    sys.exit("no free 172.30.x.0/24 for the cluster network")
print(free[0])' "$preferred_subnet"
}

# How many nodes node $1 sees running in its cluster (0 if it does not answer).
running_nodes() {
  docker exec "$(container "$1")" rabbitmq-diagnostics -q cluster_status --formatter json 2>/dev/null |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin).get("running_nodes", [])))' 2>/dev/null ||
    echo 0
}

wait_booted() { # node, seconds
  local deadline=$((SECONDS + $2))
  until docker exec "$(container "$1")" rabbitmq-diagnostics -q check_running >/dev/null 2>&1; do
    local state
    state=$(docker inspect --format '{{.State.Status}}' "$(container "$1")" 2>/dev/null || echo missing)
    if [ "$state" != running ] || [ "$SECONDS" -ge "$deadline" ]; then
      docker logs --tail 30 "$(container "$1")" >&2 || true
      fail "node $1 did not boot within $2 s (container $state)"
    fi
    sleep "$poll_interval"
  done
}

# Seconds between two looks at the nodes. Each look runs a CLI tool, which boots an Erlang VM of
# its own for about a CPU-second: looking every second, three nodes at a time, took most of a
# 2-CPU machine from the services under test while a node rejoined.
poll_interval=${FP_RMQ_CLUSTER_POLL_INTERVAL:-3}

# Until every node sees all three running (a restarted or healed node has rejoined). A round stops
# at the first node that does not, so a waiting round costs one CLI run.
wait_cluster() { # seconds
  local deadline=$((SECONDS + $1)) node ok
  while :; do
    ok=true
    for node in "${nodes[@]}"; do
      if [ "$(running_nodes "$node")" != 3 ]; then
        ok=false
        break
      fi
    done
    $ok && return 0
    [ "$SECONDS" -lt "$deadline" ] || {
      for node in "${nodes[@]}"; do
        say "node $node sees $(running_nodes "$node") running nodes"
      done
      fail "the cluster did not have three running nodes within $1 s"
    }
    sleep "$poll_interval"
  done
}

ensure_image() {
  docker image inspect "$image" >/dev/null 2>&1 && return 0
  say "$image is missing: building the base and server images (deploy/docker/local-images.sh servers)"
  "$root/deploy/docker/local-images.sh" servers
}

start_node() { # node, cookie
  local node=$1 cookie=$2 name
  name=$(container "$node")
  # The image's entrypoint runs as the rabbitmq user; the wrapper gives it the shared cookie (in
  # place of the one the package made when the image was built, the same in every container of
  # it) and the cluster's settings first, written inside the container: no host file holds the
  # cookie.
  docker run -d --name "$name" --hostname "$name" --network "$network" --ip "$(address "$node")" \
    --label "fp-rmq-cluster=$cluster" \
    -e "RABBITMQ_DEFAULT_USER=$user" -e "RABBITMQ_DEFAULT_PASS=$password" \
    -e "FP_ERLANG_COOKIE=$cookie" \
    -e "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel net_ticktime $net_ticktime -rabbit dead_letter_worker_publisher_confirm_timeout $dlx_confirm_timeout_ms" \
    -e "RABBITMQ_CTL_ERL_ARGS=-kernel net_ticktime $net_ticktime" \
    --entrypoint sh "$image" -c '
      set -eu
      umask 077
      rm -f "$HOME/.erlang.cookie"
      printf %s "$FP_ERLANG_COOKIE" >"$HOME/.erlang.cookie"
      unset FP_ERLANG_COOKIE
      umask 022
      printf "%s\n" "cluster_partition_handling = pause_minority" >/etc/rabbitmq/conf.d/20-cluster.conf
      exec rabbitmq-entrypoint' >/dev/null
}

up() {
  for tool in docker python3 openssl; do
    command -v "$tool" >/dev/null || fail "$tool is missing"
  done
  docker info >/dev/null 2>&1 || fail "docker does not answer (is the daemon running?)"
  if docker network inspect "$network" >/dev/null 2>&1; then
    fail "$network exists: \`FP_RMQ_CLUSTER=$cluster $0 down\` first"
  fi
  ensure_image
  local subnet cookie node
  subnet=$(free_subnet)
  docker network create --subnet "$subnet" --label "fp-rmq-cluster=$cluster" "$network" >/dev/null
  say "network $network on $subnet"
  cookie=$(openssl rand -hex 20)
  for node in "${nodes[@]}"; do
    start_node "$node" "$cookie"
  done
  for node in "${nodes[@]}"; do
    wait_booted "$node" 120
  done
  # Nodes 2 and 3 leave their own fresh clusters and join node 1's (its user comes with it).
  # (The CLI logs a few errors about tables of the node it just stopped: printed only on failure.)
  local output
  for node in 2 3; do
    output=$(docker exec "$(container "$node")" sh -c "
      rabbitmqctl -q stop_app &&
      rabbitmqctl -q reset &&
      rabbitmqctl -q join_cluster $(node_name 1) &&
      rabbitmqctl -q start_app" 2>&1) || {
      printf '%s\n' "$output" >&2
      fail "node $node could not join $(node_name 1)"
    }
  done
  wait_cluster 120
  say "three nodes running: $(urls)"
}

down() {
  local ids
  ids=$(docker ps -aq --filter "label=fp-rmq-cluster=$cluster")
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    docker rm -f -v $ids >/dev/null
  fi
  docker network rm "$network" >/dev/null 2>&1 || true
  say "removed"
}

urls() {
  local node list=()
  for node in "${nodes[@]}"; do
    list+=("amqp://$user:$password@$(address "$node"):5672/%2f")
  done
  (
    IFS=,
    echo "${list[*]}"
  )
}

command=${1:-}
case "$command" in
  up) up ;;
  down) down ;;
  urls) urls ;;
  status) docker exec "$(container 1)" rabbitmq-diagnostics cluster_status ;;
  wait) wait_cluster "${2:-120}" ;;
  stop)
    check_node "${2:-}"
    # Time for a clean shutdown: its quorum queue members hand over leadership first.
    docker stop -t 60 "$(container "$2")" >/dev/null
    say "node $2 stopped"
    ;;
  start)
    check_node "${2:-}"
    docker start "$(container "$2")" >/dev/null
    wait_booted "$2" 120
    say "node $2 running again"
    ;;
  cut)
    check_node "${2:-}"
    docker network disconnect "$network" "$(container "$2")"
    say "node $2 cut off the network"
    ;;
  heal)
    check_node "${2:-}"
    docker network connect --ip "$(address "$2")" "$network" "$(container "$2")"
    say "node $2 back on the network"
    ;;
  *)
    echo "usage: $0 up|down|urls|status|wait [seconds]|stop N|start N|cut N|heal N" >&2
    exit 2
    ;;
esac
