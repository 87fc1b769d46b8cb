#!/usr/bin/env bash
# Install the OS packages gremio's tests and local stack use, where missing (Debian/Ubuntu).
#   PostgreSQL server   the system of record (run as a private cluster, never the system one)
#   Java 17 + Maven     the Kafka broker, whose jars Maven fetches from Maven Central
#   Chromium            headless browser tests of the web pages
#   Redis               the API's shared rate-limit counters (`make up` runs redis-server on loopback)
#   wrk                 HTTP benchmarks
#   nginx               in front of the API's instances (cluster profile); run by gremio in the
#                       foreground on loopback, so Debian's own nginx.service is left stopped
#   Prometheus,         scraping every service, its alert rules (promtool tests them in make test),
#   Alertmanager        and the alerts' route to gremio's monitor; run by gremio on loopback, so
#                       the packages' own services are left stopped
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v chromium >/dev/null || need+=(chromium)
command -v redis-server >/dev/null || need+=(redis-server)
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else
  echo "gremio: missing OS packages; install them with: sudo apt-get install -y ${need[*]}" >&2; exit 1
fi
echo "installing OS packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
if [[ " ${need[*]} " == *" nginx "* ]]; then
  # The package starts its own service on port 80 where it can: gremio runs nginx itself.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now nginx >/dev/null 2>&1 || true
  elif [ -s /run/nginx.pid ]; then
    $sudo /usr/sbin/nginx -s quit >/dev/null 2>&1 || true
  fi
fi
for service in prometheus prometheus-alertmanager prometheus-node-exporter; do
  if [[ " ${need[*]} " == *" ${service%-node-exporter} "* ]] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
  fi
done
