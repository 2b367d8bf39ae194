#!/usr/bin/env bash
# Starts or stops a self-contained Open vSwitch sandbox (ovsdb-server + ovs-vswitchd with the
# dummy datapath, as OVS's own test suite runs it) in a directory of your choice.
#
#   ovs-sandbox.sh start DIR         bridge br-int, ports, and demo flows of which exactly one
#                                    is dirty (output to port 99, which does not exist), and
#                                    one flow to group 20, whose bucket chains to group 21,
#                                    deleted; prints the rundir (DIR) on stdout
#   ovs-sandbox.sh start-empty DIR   bridge br-int and ports only; prints the rundir
#   ovs-sandbox.sh stop DIR          stops the daemons by the PIDs in their pidfiles
#
# Point the exporter at it with
#   dirty_flow_exporter --ovs.rundir=DIR --config.file=exporters/dirty_flow/demo/checks.yml
# (the database socket defaults to DIR/db.sock). The demo flows all carry cookie 0x1, so the
# stale_cookie check finds nothing, and no two flows overlap: `ovs_dirty_flows{check=
# "missing_port"}` and `{check="missing_group"}` are the only non-zero checks, and
# `ovs_dirty_flow_info` names the flow and the group.
set -euo pipefail

usage() { echo "usage: $0 {start|start-empty|stop} DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
D=$(mkdir -p "$2" && cd "$2" && pwd)

export OVS_RUNDIR=$D OVS_LOGDIR=$D OVS_DBDIR=$D OVS_SYSCONFDIR=$D

stop() {
  for d in ovs-vswitchd ovsdb-server; do
    if [ -s "$D/$d.pid" ]; then
      pid=$(cat "$D/$d.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$D/$d.pid"
    fi
  done
}

start() {
  if [ -s "$D/ovs-vswitchd.pid" ] && kill -0 "$(cat "$D/ovs-vswitchd.pid")" 2>/dev/null; then
    echo "$0: a sandbox already runs in $D" >&2
    exit 1
  fi
  rm -f "$D/conf.db"
  ovsdb-tool create "$D/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ovsdb-server "$D/conf.db" --detach --no-chdir --pidfile="$D/ovsdb-server.pid" \
    --remote="punix:$D/db.sock" --log-file="$D/ovsdb-server.log" -vconsole:off
  vsctl() { ovs-vsctl --db="unix:$D/db.sock" --timeout=10 "$@"; }
  vsctl --no-wait init
  ovs-vswitchd "unix:$D/db.sock" --enable-dummy=override --disable-system --detach \
    --no-chdir --pidfile="$D/ovs-vswitchd.pid" --log-file="$D/ovs-vswitchd.log" -vconsole:off
  vsctl add-br br-int -- set bridge br-int datapath_type=dummy fail-mode=secure
  for i in 1 2 3; do
    vsctl add-port br-int "tap$i" -- set Interface "tap$i" type=dummy ofport_request=$i \
      "external_ids:iface-id=port-$i" "external_ids:attached-mac=fa:16:3e:00:00:0$i"
  done
}

demo_flows() {
  local f="$D/demo-flows.txt"
  cat >"$f" <<'EOF'
cookie=0x1,table=0,priority=100,in_port=1,actions=resubmit(,10)
cookie=0x1,table=0,priority=100,in_port=2,actions=resubmit(,10)
cookie=0x1,table=0,priority=100,in_port=3,actions=resubmit(,10)
cookie=0x1,table=0,priority=0,actions=drop
cookie=0x1,table=10,priority=50,dl_dst=fa:16:3e:00:00:01,actions=output:1
cookie=0x1,table=10,priority=50,dl_dst=fa:16:3e:00:00:02,actions=output:2
cookie=0x1,table=10,priority=50,dl_dst=fa:16:3e:00:00:03,actions=output:3
cookie=0x1,table=10,priority=40,ip,nw_dst=10.0.0.99,actions=output:99
cookie=0x1,table=10,priority=0,actions=drop
EOF
  ovs-ofctl add-flows "unix:$D/br-int.mgmt" "$f"
  # OVS refuses a flow to a group that does not exist and deletes a group's flows with it, but
  # keeps a bucket that chains to a deleted group: traffic through group 20 loses that bucket.
  local b="unix:$D/br-int.mgmt"
  ovs-ofctl -O OpenFlow13 add-group "$b" "group_id=21,type=all,bucket=output:2"
  ovs-ofctl -O OpenFlow13 add-group "$b" "group_id=20,type=all,bucket=output:1,bucket=actions=group:21"
  ovs-ofctl -O OpenFlow13 add-flow "$b" "cookie=0x1,table=10,priority=40,ip,nw_dst=10.0.0.98,actions=group:20"
  ovs-ofctl -O OpenFlow13 del-groups "$b" group_id=21
}

case $cmd in
  start) start; demo_flows; echo "$D" ;;
  start-empty) start; echo "$D" ;;
  stop) stop ;;
  *) usage ;;
esac
