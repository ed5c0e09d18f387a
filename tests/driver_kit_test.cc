// The driver kit's request tracker (pcie/request_tracker.h) and quiesce (pcie/quiesce.h):
// identifiers unique while outstanding and stray completions refused, over a table of
// orders; the quiesce order (stop, drain, bus master off) on every outcome of each step.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "pcie/quiesce.h"
#include "pcie/request_tracker.h"
#include "pcie/testing/device_model.h"

namespace {

using namespace std::chrono_literals;
using pcie::Errc;
using pcie::RequestTracker;

TEST(RequestTracker, RefusesCapacitiesAndRangesItCannotHold) {
  EXPECT_EQ(RequestTracker<int>::create(0).error().code, Errc::invalid_argument);
  EXPECT_EQ(RequestTracker<int>::create((1u << 24) + 1).error().code, Errc::invalid_argument);
  EXPECT_EQ(RequestTracker<int>::create(2, UINT32_MAX).error().code, Errc::invalid_argument);
  EXPECT_TRUE(RequestTracker<int>::create(1, UINT32_MAX));
  EXPECT_TRUE(RequestTracker<int>::create(1u << 24));
}

TEST(RequestTracker, AnEmptyTrackerFailsInsteadOfCrashing) {
  RequestTracker<int> empty;
  EXPECT_FALSE(empty.valid());
  EXPECT_EQ(empty.start(1).error().code, Errc::invalid_argument);
  EXPECT_EQ(empty.finish(0).error().code, Errc::invalid_argument);
  EXPECT_FALSE(empty.is_outstanding(0));
  empty.clear();
}

TEST(RequestTracker, HandsOutEveryIdentifierOnceThenIsBusy) {
  auto tracker = RequestTracker<std::string>::create(4, 10).value();
  std::set<std::uint32_t> ids;
  for (int i = 0; i < 4; ++i) ids.insert(tracker.start("r" + std::to_string(i)).value());
  EXPECT_EQ(ids, (std::set<std::uint32_t>{10, 11, 12, 13}));
  EXPECT_EQ(tracker.outstanding(), 4u);
  auto full = tracker.start("one more");
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, Errc::busy);
  EXPECT_EQ(tracker.finish(12).value(), "r2");
  EXPECT_EQ(tracker.start("again").value(), 12u);
}

// Stray completions: each is refused with malformed and changes nothing.
TEST(RequestTracker, StrayCompletionsAreDeviceErrorsThatChangeNothing) {
  auto tracker = RequestTracker<int>::create(8, 100).value();
  const std::uint32_t live = tracker.start(7).value();
  const std::uint32_t done = tracker.start(8).value();
  ASSERT_TRUE(tracker.finish(done));
  struct Case {
    const char* what;
    std::uint32_t id;
  };
  for (const Case& stray : {Case{"completed twice", done}, Case{"never started", 105}, Case{"below the range", 99},
                            Case{"above the range", 108}, Case{"far above", UINT32_MAX}, Case{"zero", 0}}) {
    auto finished = tracker.finish(stray.id);
    ASSERT_FALSE(finished) << stray.what;
    EXPECT_EQ(finished.error().code, Errc::malformed) << stray.what;
    EXPECT_FALSE(finished.error().hint.empty()) << stray.what;
    EXPECT_EQ(tracker.outstanding(), 1u) << stray.what;
  }
  EXPECT_EQ(*tracker.find(live).value(), 7);
  EXPECT_EQ(tracker.finish(live).value(), 7);
}

// The property NVMe needs (base spec 2.0, 4.2.1), under completions in any order: no
// identifier is handed out while outstanding, and freed ones wait their turn (oldest first).
TEST(RequestTracker, IdentifiersStayUniqueUnderRandomOrdersOfCompletion) {
  for (const std::uint32_t capacity : {1u, 2u, 7u, 63u, 1023u}) {
    for (const unsigned seed : {1u, 2u, 3u}) {
      auto tracker = RequestTracker<std::uint32_t>::create(capacity).value();
      std::mt19937 random(seed);
      std::vector<std::uint32_t> outstanding;
      for (int step = 0; step < 5000; ++step) {
        const bool start = outstanding.empty() || (outstanding.size() < capacity && random() % 2 == 0);
        if (start) {
          const std::uint32_t id = tracker.start(static_cast<std::uint32_t>(step)).value();
          ASSERT_EQ(std::count(outstanding.begin(), outstanding.end(), id), 0) << "reused while outstanding";
          outstanding.push_back(id);
        } else {
          const std::size_t pick = random() % outstanding.size();
          ASSERT_TRUE(tracker.finish(outstanding[pick]));
          outstanding.erase(outstanding.begin() + static_cast<std::ptrdiff_t>(pick));
        }
        ASSERT_EQ(tracker.outstanding(), outstanding.size());
      }
    }
  }
}

TEST(RequestTracker, AFreedIdentifierIsTheLastToBeReused) {
  auto tracker = RequestTracker<int>::create(4).value();
  for (int i = 0; i < 4; ++i) (void)tracker.start(i);
  ASSERT_TRUE(tracker.finish(1));
  ASSERT_TRUE(tracker.finish(3));
  EXPECT_EQ(tracker.start(0).value(), 1u);
  ASSERT_TRUE(tracker.finish(0));
  EXPECT_EQ(tracker.start(0).value(), 3u);  // freed before 0
  EXPECT_EQ(tracker.start(0).value(), 0u);
}

TEST(RequestTracker, ClearAbandonsEveryRequestAfterAReset) {
  auto tracker = RequestTracker<int>::create(3).value();
  for (int i = 0; i < 3; ++i) (void)tracker.start(i);
  std::vector<std::uint32_t> seen;
  tracker.for_each_outstanding([&](std::uint32_t id, int&) { seen.push_back(id); });
  EXPECT_EQ(seen, (std::vector<std::uint32_t>{0, 1, 2}));
  tracker.clear();
  EXPECT_EQ(tracker.outstanding(), 0u);
  EXPECT_EQ(tracker.finish(1).error().code, Errc::malformed) << "a completion from before the reset";
  EXPECT_EQ(tracker.start(9).value(), 0u);
}

// --- quiesce ---

struct Steps {
  explicit Steps(pcie::testing::DeviceModel* device_model) : model(device_model) {}
  std::vector<std::string> log;
  pcie::testing::DeviceModel* model = nullptr;
  pcie::QuiesceSteps make(pcie::Result<void> stop_result, int busy_looks, pcie::Result<bool> idle_error = true) {
    pcie::QuiesceSteps steps;
    steps.stop = [this, stop_result] {
      log.push_back(std::string("stop, bus master ") + (model->bus_master() ? "on" : "off"));
      return stop_result;
    };
    steps.idle = [this, busy_looks, idle_error, looks = 0]() mutable -> pcie::Result<bool> {
      log.push_back(std::string("idle?, bus master ") + (model->bus_master() ? "on" : "off"));
      if (!idle_error) return idle_error;
      return ++looks > busy_looks;
    };
    steps.wait = {.timeout = 100ms, .spin = 0ns, .min_sleep = 1ms, .max_sleep = 5ms};
    return steps;
  }
};

TEST(Quiesce, StopsThenDrainsWithBusMasteringOnThenTurnsItOff) {
  pcie::testing::DeviceModel model;
  auto device = model.open();
  ASSERT_TRUE(device->enable_bus_master(true));
  Steps steps(&model);
  ASSERT_TRUE(pcie::quiesce(*device, steps.make({}, 2)));
  EXPECT_EQ(steps.log, (std::vector<std::string>{"stop, bus master on", "idle?, bus master on",
                                                 "idle?, bus master on", "idle?, bus master on"}));
  EXPECT_FALSE(model.bus_master());
}

// Whatever a step says, bus mastering ends up off (fail closed), and the first error is
// the one reported.
TEST(Quiesce, EveryFailureStillTurnsBusMasteringOff) {
  struct Case {
    const char* what;
    pcie::Result<void> stop;
    int busy_looks;
    pcie::Result<bool> idle;
    Errc expected;
    const char* reason;
  };
  const pcie::Error refused = pcie::make_error(Errc::device_removed, "stop", "dev", "gone");
  for (const Case& c : {Case{"stop fails", std::unexpected(refused), 0, true, Errc::device_removed, "gone"},
                        Case{"never idle", {}, 1 << 30, true, Errc::io_error, "still in flight"},
                        Case{"idle check fails", {}, 0, std::unexpected(refused), Errc::device_removed, "gone"}}) {
    pcie::testing::DeviceModel model;
    auto device = model.open();
    ASSERT_TRUE(device->enable_bus_master(true));
    Steps steps(&model);
    const auto start = std::chrono::steady_clock::now();
    auto result = pcie::quiesce(*device, steps.make(c.stop, c.busy_looks, c.idle));
    ASSERT_FALSE(result) << c.what;
    EXPECT_EQ(result.error().code, c.expected) << c.what;
    EXPECT_NE(result.error().reason.find(c.reason), std::string::npos) << c.what << ": " << result.error().message();
    EXPECT_FALSE(model.bus_master()) << c.what;
    EXPECT_LT(std::chrono::steady_clock::now() - start, 2s) << c.what << ": the drain is bounded";
  }
}

TEST(Quiesce, EmptyStepsOnlyTurnBusMasteringOff) {
  pcie::testing::DeviceModel model;
  auto device = model.open();
  ASSERT_TRUE(device->enable_bus_master(true));
  ASSERT_TRUE(pcie::quiesce(*device, {}));
  EXPECT_FALSE(model.bus_master());
}

TEST(Quiescer, RunsOnceAtTheLatestWhenDestroyedAndSurvivesMoves) {
  pcie::testing::DeviceModel model;
  auto device = model.open();
  Steps steps(&model);
  {
    ASSERT_TRUE(device->enable_bus_master(true));
    pcie::Quiescer first(*device, steps.make({}, 0));
    pcie::Quiescer moved(std::move(first));
    EXPECT_FALSE(first.valid());
    EXPECT_TRUE(first.run()) << "an empty Quiescer does nothing";
    EXPECT_FALSE(moved.done());
    EXPECT_TRUE(model.bus_master());
  }
  EXPECT_FALSE(model.bus_master()) << "the destructor quiesced";
  EXPECT_EQ(steps.log.size(), 2u) << "stop and one look, once";

  steps.log.clear();
  ASSERT_TRUE(device->enable_bus_master(true));
  pcie::Quiescer once(*device, steps.make({}, 0));
  ASSERT_TRUE(once.run());
  EXPECT_TRUE(once.done());
  ASSERT_TRUE(device->enable_bus_master(true));
  EXPECT_TRUE(once.run());
  EXPECT_TRUE(model.bus_master()) << "a second run() touches the device no more";
  EXPECT_EQ(steps.log.size(), 2u);
}

TEST(Quiescer, MoveAssignmentLetsTheOldDeviceGoFirst) {
  pcie::testing::DeviceModel old_model;
  pcie::testing::DeviceModel new_model;
  auto old_device = old_model.open();
  auto new_device = new_model.open();
  ASSERT_TRUE(old_device->enable_bus_master(true));
  ASSERT_TRUE(new_device->enable_bus_master(true));
  pcie::Quiescer guard(*old_device, {});
  guard = pcie::Quiescer(*new_device, {});
  EXPECT_FALSE(old_model.bus_master());
  EXPECT_TRUE(new_model.bus_master());
  ASSERT_TRUE(guard.run());
  EXPECT_FALSE(new_model.bus_master());
}

}  // namespace
