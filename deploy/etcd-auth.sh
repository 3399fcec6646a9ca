#!/bin/sh
# etcd authentication and authorization for one keyshard cluster (etcd 3.4+, etcdctl v3).
#
#   deploy/etcd-auth.sh --cluster NAME --root-user CN --coordinator CN [--coordinator CN ...]
#
# Run by the etcd operator with etcdctl's connection in the environment (ETCDCTL_ENDPOINTS,
# ETCDCTL_CACERT, and the operator's own ETCDCTL_CERT / ETCDCTL_KEY, whose CN is --root-user).
# What it leaves behind, and the invariants it keeps:
#   - user `root` with the root role and no password (etcd refuses `auth enable` without it);
#     nobody logs in as it: a password login is impossible and no certificate has CN `root`;
#   - user <root-user> (the operator's certificate CN) with the root role: the only identity
#     that may manage users and roles, defragment, or disable auth;
#   - role keyshard-<cluster> with readwrite on the prefix /keyshard/<cluster>/ (all of
#     keyshard's keys, leases, elections and watches are under it), granted to each
#     coordinator's certificate CN: with --client-cert-auth etcd takes the CN as the user name;
#   - authentication enabled. Every other certificate of the CA may connect but reads and
#     writes nothing (etcdserver: permission denied).
# Idempotent: it runs again on every `keyshard dev` start and may be rerun after adding a
# coordinator replica (name every replica each time; the script never removes a user).
set -eu

cluster=''
root_user=''
coordinators=''
while [ $# -gt 0 ]; do
  case $1 in
    --cluster) cluster=$2; shift 2 ;;
    --root-user) root_user=$2; shift 2 ;;
    --coordinator) coordinators="$coordinators $2"; shift 2 ;;
    *) echo "etcd-auth: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$cluster" ] || [ -z "$root_user" ] || [ -z "$coordinators" ]; then
  echo 'usage: etcd-auth.sh --cluster NAME --root-user CN --coordinator CN [--coordinator CN ...]' >&2
  exit 2
fi
case $root_user in root) echo 'etcd-auth: --root-user must not be `root` (that user has no credential)' >&2; exit 2 ;; esac

export ETCDCTL_API=3

# Runs etcdctl; an error saying the thing already exists counts as done.
ensure() {
  if out=$(etcdctl "$@" 2>&1); then return 0; fi
  case $out in
    *'already exists'*) return 0 ;;
  esac
  echo "etcd-auth: etcdctl $*: $out" >&2
  return 1
}

role="keyshard-$cluster"
prefix="/keyshard/$cluster/"

ensure role add root
ensure user add root --no-password
ensure user grant-role root root
ensure user add "$root_user" --no-password
ensure user grant-role "$root_user" root
ensure role add "$role"
ensure role grant-permission "$role" --prefix=true readwrite "$prefix"
for cn in $coordinators; do
  ensure user add "$cn" --no-password
  ensure user grant-role "$cn" "$role"
done
ensure auth enable
echo "etcd-auth: auth enabled; role $role (readwrite $prefix) granted to$coordinators"
