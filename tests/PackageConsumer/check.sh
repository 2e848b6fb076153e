#!/usr/bin/env bash
# Restores Arwkv.Core from a local package folder into a fresh console project (outside the repository) and runs
# public API that needs no model. Usage: tests/PackageConsumer/check.sh PACKAGES_DIR
set -euo pipefail
if [ $# -ne 1 ] || [ ! -d "$1" ]; then echo "usage: $0 PACKAGES_DIR" >&2; exit 2; fi
PACKAGES=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
nupkg=$(ls "$PACKAGES"/Arwkv.Core.*.nupkg 2>/dev/null | head -n 1 || true)
if [ -z "$nupkg" ]; then echo "check.sh: no Arwkv.Core.*.nupkg in $PACKAGES" >&2; exit 1; fi
VERSION=$(basename "$nupkg" .nupkg); VERSION=${VERSION#Arwkv.Core.}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/arwkv-consumer.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

# Stop MSBuild from picking up Directory.Build.* files from directories above the temp dir.
echo '<Project />' > "$WORK/Directory.Build.props"
echo '<Project />' > "$WORK/Directory.Build.targets"

# Arwkv.* only from the folder under test; everything else from the machine's package cache (when present, so a
# warm machine needs no network) or nuget.org. Packages restore into the temp dir, never the global cache, so a
# rebuilt package with the same version is not shadowed by a stale copy.
GLOBAL=${NUGET_PACKAGES:-$HOME/.nuget/packages}
{
  echo '<?xml version="1.0" encoding="utf-8"?>'
  echo '<configuration>'
  echo '  <packageSources>'
  echo '    <clear />'
  echo "    <add key=\"local\" value=\"$PACKAGES\" />"
  if [ -d "$GLOBAL" ]; then echo "    <add key=\"cache\" value=\"$GLOBAL\" />"; fi
  echo '    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" protocolVersion="3" />'
  echo '  </packageSources>'
  echo '  <packageSourceMapping>'
  echo '    <packageSource key="local"><package pattern="Arwkv.*" /></packageSource>'
  if [ -d "$GLOBAL" ]; then echo '    <packageSource key="cache"><package pattern="*" /></packageSource>'; fi
  echo '    <packageSource key="nuget.org"><package pattern="*" /></packageSource>'
  echo '  </packageSourceMapping>'
  echo '</configuration>'
} > "$WORK/nuget.config"

cat > "$WORK/Consumer.csproj" <<PROJ
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
    <ImplicitUsings>enable</ImplicitUsings>
    <!-- Some NuGet mirrors lack Google.Protobuf 3.30.2 (a Microsoft.ML.Tokenizers dependency); a newer one is fine. -->
    <NoWarn>NU1603</NoWarn>
    <RestorePackagesPath>\$(MSBuildProjectDirectory)/packages</RestorePackagesPath>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="Arwkv.Core" Version="[$VERSION]" />
  </ItemGroup>
</Project>
PROJ
cp "$HERE/Program.cs.txt" "$WORK/Program.cs"

echo "check.sh: restoring Arwkv.Core $VERSION from $PACKAGES"
dotnet restore "$WORK/Consumer.csproj" --configfile "$WORK/nuget.config" -nologo -v q
dotnet build "$WORK/Consumer.csproj" -c Release --no-restore -nologo -v q
dotnet "$WORK/bin/Release/net10.0/Consumer.dll" "$WORK/data"
echo "check.sh: package consumer OK"
