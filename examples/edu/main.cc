// edu-driver [--backend vfio|vfio-noiommu|uio] [--dma-mask BITS] BDF: runs the example driver against a QEMU
// edu device: identification, liveness, factorial with a completion interrupt, DMA to the
// device and back. The driver is the same on every backend; only the open call differs:
//   vfio          bound to vfio-pci, behind an IOMMU (the default)
//   vfio-noiommu  bound to vfio-pci in no-IOMMU mode: DMA to physical addresses
//   uio           bound to uio_pci_generic: INTx, DMA to physical addresses
// The last two let the device reach all of memory, which this program accepts for the demo.
// --dma-mask: the edu's dma_mask in bits, when QEMU was started with -device
// edu,dma_mask=... (default 28, QEMU's).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "examples/common/cli.h"
#include "examples/common/open_device.h"
#include "examples/common/removal_watch.h"
#include "examples/edu/edu_driver.h"

namespace {

// Says why on standard error; the exit status: 6 when the device went away, else 1.
int fail(const pcie::Error& error) {
  std::fprintf(stderr, "edu-driver: %s\n", error.message().c_str());
  return examples::exit_status_for(error);
}

std::string usage_text() {
  return std::string("edu-driver [--backend ") + examples::kBackendNames +
         "] [--dma-mask 12..64] BDF   (a QEMU edu device)\n";
}

struct Invocation {
  std::string_view backend = "vfio";
  examples::EduOptions options;
  int next = 1;  // the first argument after the options
};

// Options come in pairs ("--name value"); nullopt for a usage error.
std::optional<Invocation> parse_options(int argc, char** argv) {
  Invocation invocation;
  int& next = invocation.next;
  bool usage_error = false;
  while (next + 1 < argc && std::string_view(argv[next]).starts_with("--")) {
    const std::string_view option = argv[next];
    if (option == "--backend") {
      invocation.backend = argv[next + 1];
    } else if (option == "--dma-mask") {
      char* end = nullptr;
      const unsigned long bits = std::strtoul(argv[next + 1], &end, 10);
      if (end == argv[next + 1] || *end != '\0' || bits < 12 || bits > 64) usage_error = true;
      invocation.options.dma_mask_bits = static_cast<unsigned>(bits);
    } else {
      usage_error = true;
    }
    next += 2;
  }
  if (usage_error || argc != next + 1 || !examples::known_backend(invocation.backend)) return std::nullopt;
  return invocation;
}

// Identification, liveness, factorial with a completion interrupt, DMA there and back.
int demonstrate(examples::EduDriver& edu) {
  std::printf("backend: %s; DMA: %s\n", edu.device().backend_name().c_str(),
              std::string(edu.buffer().backend_name()).c_str());
  std::printf("identification: 0x%08x\n", edu.identification());
  std::printf("liveness(0x12345678): 0x%08x\n", edu.liveness(0x12345678));
  auto factorial = edu.factorial(10);
  if (!factorial) return fail(factorial.error());
  std::printf("10! by the device, completion by %s: %u\n", pcie::to_string(edu.interrupt_kind()), *factorial);

  const char message[] = "hello from host memory, by DMA";
  if (auto sent = edu.dma_to_device(std::as_bytes(std::span(message))); !sent) return fail(sent.error());
  auto back = edu.dma_from_device(sizeof message);
  if (!back) return fail(back.error());
  std::printf("DMA there and back (%zu bytes at bus address 0x%llx): \"%s\"\n", back->size(),
              static_cast<unsigned long long>(edu.buffer().bus_address().value),
              reinterpret_cast<const char*>(back->data()));
  return std::memcmp(back->data(), message, sizeof message) == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (auto answered = examples::answer_help_or_version(argc, argv, "edu-driver", usage_text())) return *answered;
  const auto invocation = parse_options(argc, argv);
  if (!invocation) return examples::usage_error(usage_text());
  auto bdf = pcie::Bdf::parse(argv[invocation->next]);
  if (!bdf) return std::fprintf(stderr, "edu-driver: %s\n", bdf.error().message().c_str()), 2;
  auto device = examples::open_device(invocation->backend, *bdf);
  if (!device) return fail(device.error());
  auto edu = examples::EduDriver::open(std::move(*device), invocation->options);
  if (!edu) return fail(edu.error());
  const auto removal = examples::DeviceRemovalWatch::start(edu->device(), "edu-driver");
  return removal.final_status(demonstrate(*edu), "edu-driver", edu->device());
}
