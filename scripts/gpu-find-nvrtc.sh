# Sourced by the GPU scripts: finds libnvrtc on the machine (CUDA toolkit, system, Python
# wheels) and points the loader at it (cudarc looks for libnvrtc.so / .so.12: a folder of
# symlinks covers .so.13). Sets nvrtc to the library found (empty if none).
nvrtc=""
for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu /usr/local/lib; do
  nvrtc=$(ls "$dir"/libnvrtc.so* 2>/dev/null | grep -v builtins | grep -v alt | head -n1)
  [ -n "$nvrtc" ] && break
done
if [ -z "$nvrtc" ]; then
  nvrtc=$(timeout 60 find /usr /opt "$HOME/.cache/gemma-rs" -name 'libnvrtc.so*' -not -name '*builtins*' -not -name '*alt*' 2>/dev/null | head -n1)
fi
if [ -n "$nvrtc" ]; then
  mkdir -p /tmp/gemma-nvrtc
  ln -sf "$nvrtc" /tmp/gemma-nvrtc/libnvrtc.so
  ln -sf "$nvrtc" /tmp/gemma-nvrtc/libnvrtc.so.12
  export LD_LIBRARY_PATH="/tmp/gemma-nvrtc:$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "using $nvrtc"
else
  echo "libnvrtc not found on this machine: kernel steps will fail"
fi
