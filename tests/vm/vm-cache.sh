# Sourced by scripts/setup and tests/vm/pcie-vm: where the test VM's kernel lives. Outside
# the repository, never committed; PCIE_VM_CACHE overrides it.
pcie_vm_cache_dir() {
  echo "${PCIE_VM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/pcie-vm}"
}
