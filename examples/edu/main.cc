// edu-driver BDF: runs the example driver against a QEMU edu device bound to vfio-pci
// (scripts/vm binds 0000:00:06.0): identification, liveness, factorial with a completion
// interrupt, DMA to the device and back.
#include <cstdio>
#include <cstring>

#include "examples/edu/edu_driver.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: edu-driver BDF   (a QEMU edu device bound to vfio-pci)\n");
    return 2;
  }
  auto bdf = pcie::Bdf::parse(argv[1]);
  if (!bdf) return std::fprintf(stderr, "edu-driver: %s\n", bdf.error().message().c_str()), 2;
  auto container = pcie::VfioContainer::open();
  if (!container) return std::fprintf(stderr, "edu-driver: %s\n", container.error().message().c_str()), 1;
  auto edu = examples::EduDriver::open(*container, *bdf);
  if (!edu) return std::fprintf(stderr, "edu-driver: %s\n", edu.error().message().c_str()), 1;

  std::printf("identification: 0x%08x\n", edu->identification());
  std::printf("liveness(0x12345678): 0x%08x\n", edu->liveness(0x12345678));
  auto factorial = edu->factorial(10);
  if (!factorial) return std::fprintf(stderr, "edu-driver: %s\n", factorial.error().message().c_str()), 1;
  std::printf("10! by the device, completion by MSI: %u\n", *factorial);

  const char message[] = "hello from host memory, by DMA through the IOMMU";
  if (auto sent = edu->dma_to_device(std::as_bytes(std::span(message))); !sent) {
    return std::fprintf(stderr, "edu-driver: %s\n", sent.error().message().c_str()), 1;
  }
  auto back = edu->dma_from_device(sizeof message);
  if (!back) return std::fprintf(stderr, "edu-driver: %s\n", back.error().message().c_str()), 1;
  std::printf("DMA there and back (%zu bytes): \"%s\"\n", back->size(), reinterpret_cast<const char*>(back->data()));
  return std::memcmp(back->data(), message, sizeof message) == 0 ? 0 : 1;
}
