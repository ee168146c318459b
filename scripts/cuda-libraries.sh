# Sourced by scripts/device-check.sh (and by tests/tests/device_check_script.rs): makes the
# CUDA libraries the GPU backend loads at run time visible to the loader. cudarc dlopens
# libnvrtc, libcublas, libcublasLt and libcudnn by name; on a machine whose CUDA comes as pip
# wheels inside a Python environment (nvidia-cudnn-cu13, nvidia-cublas, nvidia-cuda-nvrtc:
# site-packages/nvidia/*/lib) ldconfig does not list them, and without LD_LIBRARY_PATH every
# GPU part would fail.

# The libraries (the names cudarc tries for CUDA 13 and cuDNN 9) the backend needs.
CUDA_LIBRARIES=(libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13 libcudnn.so.9)

# Folders holding CUDA wheel libraries under a site-packages folder ($1): every `lib` folder
# at most three levels under nvidia/ that holds a lib*.so*, sorted.
cuda_wheel_library_dirs() {
    local purelib=$1 dir
    [ -d "$purelib/nvidia" ] || return 0
    while IFS= read -r dir; do
        if compgen -G "$dir/lib*.so*" >/dev/null; then
            echo "$dir"
        fi
    done < <(find "$purelib/nvidia" -maxdepth 3 -type d -name lib | sort)
}

# Where the loader would find library $1 (ldconfig's cache, then LD_LIBRARY_PATH's folders):
# prints the path, or fails.
loader_path() {
    local name=$1 dir found
    found=$(ldconfig -p 2>/dev/null | awk -v n="$name" '$1 == n { print $NF; exit }')
    if [ -n "$found" ]; then
        echo "$found"
        return 0
    fi
    local -a dirs
    IFS=: read -ra dirs <<<"${LD_LIBRARY_PATH:-}"
    for dir in "${dirs[@]}"; do
        if [ -n "$dir" ] && [ -e "$dir/$name" ]; then
            echo "$dir/$name"
            return 0
        fi
    done
    return 1
}

# Prints what the loader sees of the CUDA libraries; where some are missing, prepends the
# CUDA wheel folders of the Python environment ($1, default python3) to LD_LIBRARY_PATH
# (exported) and prints where each library now comes from (the file it resolves to names its
# version).
use_cuda_wheels() {
    local python=${1:-python3} name path purelib dirs
    local -a missing=()
    for name in "${CUDA_LIBRARIES[@]}"; do
        if path=$(loader_path "$name"); then
            echo "  $name: $(readlink -f "$path" 2>/dev/null || echo "$path")"
        else
            missing+=("$name")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    echo "  not seen by the loader: ${missing[*]}"
    if ! purelib=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null); then
        echo "  no $python to look for CUDA wheels in: the GPU parts will say what is missing"
        return 0
    fi
    dirs=$(cuda_wheel_library_dirs "$purelib" | paste -sd: -)
    if [ -z "$dirs" ]; then
        echo "  no nvidia/*/lib under $purelib: the GPU parts will say what is missing"
        return 0
    fi
    export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "  LD_LIBRARY_PATH += $dirs"
    for name in "${missing[@]}"; do
        if path=$(loader_path "$name"); then
            echo "  $name: $(readlink -f "$path" 2>/dev/null || echo "$path")"
        else
            echo "  $name: still missing"
        fi
    done
}
