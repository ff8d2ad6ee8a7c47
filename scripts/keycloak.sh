#!/usr/bin/env bash
# Installs the Keycloak server the interoperability tests run (tests/it/keycloak.rs) and
# prints its directory on stdout; everything else goes to stderr.
#
#   export TOKEX_KEYCLOAK_HOME=$(scripts/keycloak.sh) && cargo test --test it keycloak
#
# The version and the SHA-256 of its distribution are pinned in tests/interop/keycloak-dist.txt.
# The tarball comes from Maven Central (org.keycloak:keycloak-quarkus-dist), is checked against
# that pin, unpacked into target/keycloak-<version> and built once (`kc.sh build`) with the
# build-time options the tests start it with (`kc.sh start --optimized`); the result is reused
# while the pin and those options are unchanged. A missing Java or curl, a failed download, a
# checksum mismatch or a failed build stops here: the tests never skip.
set -euo pipefail
cd "$(dirname "$0")/.."

pin=tests/interop/keycloak-dist.txt
version=$(sed -n 's/^version=//p' "$pin")
sha256=$(sed -n 's/^sha256=//p' "$pin")
[ -n "$version" ] && [ -n "$sha256" ] || { echo "$pin: version= and sha256= are required" >&2; exit 1; }
# Build-time options (Keycloak refuses to change them at start): the H2 file database, whose
# path each test run chooses, and optional TLS client certificates for tls_client_auth.
build_options=(--db=dev-file --https-client-auth=request)

command -v curl > /dev/null || { echo "curl is required to download Keycloak" >&2; exit 1; }
command -v java > /dev/null || { echo "java (17 or later) is required to run Keycloak" >&2; exit 1; }
java_version=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
[ "${java_version%%.*}" -ge 17 ] 2> /dev/null \
  || { echo "Keycloak $version needs Java 17 or later; java is ${java_version:-unknown}" >&2; exit 1; }

home=target/keycloak-$version
want="$sha256 ${build_options[*]}"
if [ ! -x "$home/bin/kc.sh" ] || [ "$(cat "$home/.installed" 2> /dev/null)" != "$want" ]; then
  rm -rf "$home" "$home.tar.gz"
  mkdir -p target
  url=https://repo1.maven.org/maven2/org/keycloak/keycloak-quarkus-dist/$version/keycloak-quarkus-dist-$version.tar.gz
  echo "downloading $url" >&2
  curl -fsSL --retry 3 -o "$home.tar.gz" "$url"
  echo "$sha256  $home.tar.gz" | sha256sum --check --quiet - >&2 \
    || { echo "checksum mismatch for $url (pinned in $pin)" >&2; rm -f "$home.tar.gz"; exit 1; }
  mkdir -p "$home"
  tar -xzf "$home.tar.gz" -C "$home" --strip-components=1
  rm "$home.tar.gz"
  echo "kc.sh build ${build_options[*]}" >&2
  "$home/bin/kc.sh" build "${build_options[@]}" > "$home/build.log" 2>&1 \
    || { cat "$home/build.log" >&2; echo "kc.sh build failed" >&2; exit 1; }
  echo "$want" > "$home/.installed"
fi
echo "$(cat "$home/version.txt") in $home, Java $java_version" >&2
echo "$PWD/$home"
