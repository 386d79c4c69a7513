// cudasim: an execution model of CUDA that runs the device code of csrc/cuda on the CPU, compiled by g++.
//
// The test program (tests/cudasim/kernels_test.cpp) includes this header first and defines RDNAS_CUDASIM; the
// kernels' headers (csrc/cuda/*_device.cuh) then compile unchanged: __global__ / __device__ functions are plain
// functions, and csrc/cuda/launch.cuh's launch() runs a kernel's grid here instead of <<<>>>.
//
// What it models
//  * A launch runs its blocks one after another, in forward, reverse or seeded random order (Options::schedule).
//    threadIdx / blockIdx / blockDim / gridDim are those of the CUDA thread running. Launch configurations are
//    checked as CUDA checks them (grid y/z <= 65535, block <= 1024 threads, no empty grid or block).
//  * Fiber mode (Options::mode = kFibers): every CUDA thread of the block is a fiber (ucontext) on one OS thread.
//    A thread runs until it reaches a synchronisation point: __syncthreads, a __shfl_*_sync, __syncwarp, an
//    atomic, a fence. There the scheduler switches to the next runnable thread: the next thread index (forward),
//    the previous one (reverse), a seeded random one, or (warps) the next lane of the same warp while that warp
//    can run, else the highest-numbered warp that can: one warp races ahead of the others as far as the barriers
//    let it, and warp 0 comes last. So every interleaving the program order allows between synchronisation points
//    is possible, and the four schedules pick very different ones.
//  * Threads mode (kThreads): every CUDA thread of the block is an OS thread; barriers and warp operations are
//    mutex + condition variable, so ThreadSanitizer sees the happens-before a barrier gives and reports the data
//    race a missing barrier leaves (threads of different warps only synchronise through __syncthreads).
//  * __syncthreads: every thread of the block must arrive at the same barrier (same file and line). A barrier
//    reached at another line, reached after a thread of the block exited, or a thread exiting while others wait,
//    aborts with a message naming the block, the threads and the lines; so does a block in which every live thread
//    waits and none can go on (fiber mode; threads mode reports a wait longer than Options::timeout_s).
//  * Warps are 32 consecutive thread indices. A __shfl_*_sync / __syncwarp completes when every lane named in its
//    mask has reached the same operation (same kind, line and mask); the caller must be in the mask, a lane named
//    in the mask must not have exited, and a shuffle must read a lane of the mask (or, for up/down, fall off the
//    warp and keep its own value). A shuffle under a lane condition with a full mask therefore never completes and
//    is reported, never silently computed.
//  * __shared__ variables are function-scope statics: one copy per kernel instantiation, shared by the threads of
//    the block running (blocks never run at the same time). AddressSanitizer checks their bounds.
//  * atomicAdd is a read-modify-write at a scheduling point; __threadfence is a scheduling point (fiber mode).
//  * Device memory is host memory: the tests hand the kernels std::vector storage, so AddressSanitizer reports a
//    read or write past an allocation.
//
// What it does not model
//  * Blocks never run concurrently: races between blocks (e.g. the ordering of the last-block ticket) are not
//    tested, only its logic. A kernel must not wait for another block (no cooperative groups).
//  * No GPU arithmetic: host float / double maths (no FMA contraction with -ffp-contract=off, but the GPU's exp
//    and log differ in the last bits): results are compared with float64 references under tolerances, not bit
//    for bit with a GPU.
//  * No resource limits beyond the launch configuration (registers, shared memory size, occupancy), no memory
//    model weaker than the host's, no timing; shared memory is not reset between blocks (a GPU leaves it
//    undefined), so reading it before writing is caught only when the stale value gives a wrong result.
//  * Two groups of lanes of one warp running warp operations with different masks at the same time are reported
//    as a mismatch (stricter than sm_70+, which allows it); the kernels here always use full masks.
#pragma once

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define CUDASIM_ASAN 1
#include <sanitizer/common_interface_defs.h>
#endif

// ---------------------------------------------------------------------------------------------------------------
// The CUDA language, as far as csrc/cuda uses it.

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace cudasim {

enum class Mode { kFibers, kThreads };
enum class Schedule { kForward, kReverse, kRandom, kWarps };

struct Options {
  Mode mode = Mode::kFibers;
  Schedule schedule = Schedule::kForward;
  uint64_t seed = 1;
  double timeout_s = 120.0;  // threads mode: a wait longer than this is reported as a hang
};

inline Options& options() {
  static Options o;
  return o;
}

struct Stats {
  uint64_t launches = 0, blocks = 0, threads = 0, switches = 0, memsets = 0;
};

inline Stats& stats() {
  static Stats s;
  return s;
}

[[noreturn]] inline void fail(const char* format, ...) {
  std::fflush(stdout);
  std::fprintf(stderr, "cudasim: error: ");
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
  std::_Exit(3);
}

struct Index {
  unsigned int x, y, z;
};

enum class State { kRunnable, kAtBarrier, kAtWarpSync, kExited };

// A fiber's saved context. On x86-64 a switch saves the callee-saved registers on the fiber's stack and swaps the
// stack pointers (cudasim_switch_context below): no system call, and nothing for AddressSanitizer to intercept
// (its swapcontext interceptor clears the shadow of the whole target stack on every switch). Elsewhere it is a
// ucontext_t and swapcontext.
#if defined(__x86_64__)
#define CUDASIM_OWN_SWITCH 1
struct FiberContext {
  void* sp = nullptr;
};
extern "C" void cudasim_switch_context(void** save_sp, void* load_sp);
// Pushes rbp, rbx, r12-r15, stores rsp in *save_sp, loads load_sp, pops them and returns on the other stack. The
// x87 control word and MXCSR are not switched: the kernels never change them.
asm(R"(
  .text
  .globl cudasim_switch_context
  .type cudasim_switch_context, @function
cudasim_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cudasim_switch_context, .-cudasim_switch_context
)");
#else
struct FiberContext {
  ucontext_t context{};
};
#endif

enum class WarpOp { kShflDown, kShflUp, kShflXor, kShflIdx, kSyncWarp };

inline const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::kShflDown: return "__shfl_down_sync";
    case WarpOp::kShflUp: return "__shfl_up_sync";
    case WarpOp::kShflXor: return "__shfl_xor_sync";
    case WarpOp::kShflIdx: return "__shfl_sync";
    case WarpOp::kSyncWarp: return "__syncwarp";
  }
  return "?";
}

// One CUDA thread of the block running.
struct Thread {
  Index thread_idx{}, block_idx{};
  int tid = 0, warp = 0, lane = 0;
  State state = State::kRunnable;
  const char* file = "";  // where it waits
  int line = 0;
  // fiber mode
  FiberContext context{};
  char* stack = nullptr;
  size_t stack_size = 0;
  int runnable_slot = -1;  // position in Block::runnable, -1 when not runnable
};

// The pending warp operation of one warp.
struct Warp {
  std::mutex mutex;  // threads mode
  std::condition_variable cv;
  unsigned int lanes = 0;     // the lanes that exist (the last warp of a block may be partial)
  unsigned int exited = 0;    // lanes that have exited
  unsigned int arrived = 0;   // lanes waiting at the pending operation
  unsigned int mask = 0;
  WarpOp op = WarpOp::kSyncWarp;
  const char* file = "";
  int line = 0;
  uint64_t generation = 0;
  uint64_t values[32] = {};
  int params[32] = {};
  uint64_t results[32] = {};
};

struct Block {
  std::mutex mutex;  // threads mode
  std::condition_variable cv;
  Index block_idx{};
  int arrived = 0, exited = 0;
  int first_exited = -1;
  const char* file = "";
  int line = 0;
  uint64_t generation = 0;
  std::vector<Thread> threads;
  std::vector<std::unique_ptr<Warp>> warps;
  std::vector<int> runnable;  // fiber mode: the runnable threads, in no order (for the random schedule)
};

// Sets a thread's state; fiber mode also keeps the block's list of runnable threads.
inline void set_state(Block& b, Thread& t, State state) {
  if (options().mode == Mode::kFibers) {
    const bool was = t.state == State::kRunnable, is = state == State::kRunnable;
    if (was && !is) {
      const int last = b.runnable.back();
      b.runnable[t.runnable_slot] = last;
      b.threads[last].runnable_slot = t.runnable_slot;
      b.runnable.pop_back();
      t.runnable_slot = -1;
    } else if (!was && is) {
      t.runnable_slot = static_cast<int>(b.runnable.size());
      b.runnable.push_back(t.tid);
    }
  }
  t.state = state;
}

struct Launch {
  dim3 grid, block;
  uint64_t number = 0;
  std::function<void()> body;  // runs the kernel for the calling CUDA thread
  Block* block_state = nullptr;
};

inline Launch*& current_launch() {
  static Launch* launch = nullptr;
  return launch;
}

inline thread_local Thread* tl_self = nullptr;

inline Thread& self() { return *tl_self; }
inline Launch& launch_state() { return *current_launch(); }
inline Block& block_state() { return *current_launch()->block_state; }

inline std::string describe_block(const Block& b) {
  return "block (" + std::to_string(b.block_idx.x) + ", " + std::to_string(b.block_idx.y) + ", " +
         std::to_string(b.block_idx.z) + ") of launch " + std::to_string(current_launch()->number);
}

inline std::string describe_thread(const Thread& t) {
  return "thread " + std::to_string(t.tid) + " (warp " + std::to_string(t.warp) + ", lane " + std::to_string(t.lane) +
         ")";
}

inline std::string hex_mask(unsigned int mask) {
  char buffer[16];
  std::snprintf(buffer, sizeof buffer, "0x%08x", mask);
  return buffer;
}

// "threads 0-31, 64 wait at __syncthreads (file:line)" lines for every group of waiting / exited threads.
inline std::string describe_waits(const Block& b) {
  std::string out;
  size_t i = 0;
  const size_t n = b.threads.size();
  while (i < n) {
    const Thread& t = b.threads[i];
    size_t j = i + 1;
    while (j < n && b.threads[j].state == t.state && b.threads[j].line == t.line &&
           std::strcmp(b.threads[j].file, t.file) == 0)
      ++j;
    out += "\n  threads " + std::to_string(i) + "-" + std::to_string(j - 1) + ": ";
    switch (t.state) {
      case State::kRunnable: out += "runnable"; break;
      case State::kExited: out += "exited"; break;
      case State::kAtBarrier: out += "wait at __syncthreads (" + std::string(t.file) + ":" + std::to_string(t.line) + ")"; break;
      case State::kAtWarpSync: out += "wait at a warp operation (" + std::string(t.file) + ":" + std::to_string(t.line) + ")"; break;
    }
    i = j;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Fiber mode: the scheduler.

struct FiberScheduler {
  FiberContext main_context{};
  std::mt19937_64 rng{1};
  int current = -1;
  std::vector<std::pair<char*, size_t>> stacks;  // reused across blocks and launches
  const void* main_stack_bottom = nullptr;
  size_t main_stack_size = 0;
};

inline FiberScheduler& scheduler() {
  static FiberScheduler s;
  return s;
}

inline size_t fiber_stack_size() {
#ifdef CUDASIM_ASAN
  return size_t(512) << 10;
#else
  return size_t(256) << 10;
#endif
}

// A stack with a guard page below it (an overflow faults instead of corrupting the next fiber's stack).
inline std::pair<char*, size_t> fiber_stack(size_t index) {
  FiberScheduler& s = scheduler();
  while (s.stacks.size() <= index) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t size = fiber_stack_size();
    void* memory = mmap(nullptr, size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) fail("cannot map a fiber stack");
    mprotect(memory, page, PROT_NONE);
    s.stacks.emplace_back(static_cast<char*>(memory) + page, size);
  }
  return s.stacks[index];
}

// Switches from the fiber `from` (nullptr: the scheduler) to `to` (nullptr: the scheduler). `exiting`: `from` never
// runs again.
inline void swap_context(FiberContext* from, FiberContext* to) {
#ifdef CUDASIM_OWN_SWITCH
  cudasim_switch_context(&from->sp, to->sp);
#else
  swapcontext(&from->context, &to->context);
#endif
}

inline void switch_fiber(Thread* from, Thread* to, bool exiting = false) {
  FiberScheduler& s = scheduler();
  FiberContext* from_context = from != nullptr ? &from->context : &s.main_context;
  FiberContext* to_context = to != nullptr ? &to->context : &s.main_context;
#ifdef CUDASIM_ASAN
  void* fake_stack = nullptr;
  const void* bottom = to != nullptr ? to->stack : s.main_stack_bottom;
  const size_t size = to != nullptr ? to->stack_size : s.main_stack_size;
  __sanitizer_start_switch_fiber(exiting ? nullptr : &fake_stack, bottom, size);
  swap_context(from_context, to_context);
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
  (void)exiting;
  swap_context(from_context, to_context);
#endif
}

// A new fiber's context: its first switch-in starts fiber_main on its own stack.
inline void start_context(Thread& t, void (*entry)()) {
#ifdef CUDASIM_OWN_SWITCH
  // The stack, top down: a 16-byte aligned slot holding the return address cudasim_switch_context's `ret` takes
  // (so that entry starts with rsp = 8 mod 16, as after a call), then six zeroed registers it pops.
  uintptr_t top = (reinterpret_cast<uintptr_t>(t.stack) + t.stack_size) & ~uintptr_t(15);
  void** slot = reinterpret_cast<void**>(top - 16);
  *slot = reinterpret_cast<void*>(entry);
  void** sp = slot - 6;
  for (int k = 0; k < 6; ++k) sp[k] = nullptr;
  t.context.sp = sp;
#else
  getcontext(&t.context.context);
  t.context.context.uc_stack.ss_sp = t.stack;
  t.context.context.uc_stack.ss_size = t.stack_size;
  t.context.context.uc_link = nullptr;
  makecontext(&t.context.context, entry, 0);
#endif
}

inline void fiber_main();

// Next thread to run after `current` under the schedule, or -1 when none is runnable.
inline int pick_next(const Block& b, int current) {
  const int n = static_cast<int>(b.threads.size());
  switch (options().schedule) {
    case Schedule::kForward:
      for (int k = 1; k <= n; ++k) {
        const int i = ((current + k) % n + n) % n;
        if (b.threads[i].state == State::kRunnable) return i;
      }
      return -1;
    case Schedule::kReverse:
      for (int k = 1; k <= n; ++k) {
        const int i = ((current - k) % n + n) % n;
        if (b.threads[i].state == State::kRunnable) return i;
      }
      return -1;
    case Schedule::kRandom:
      if (b.runnable.empty()) return -1;
      return b.runnable[scheduler().rng() % b.runnable.size()];
    case Schedule::kWarps: {
      if (current >= 0 && current < n) {  // the current warp's next runnable lane
        const int first = current / 32 * 32, lanes = std::min(32, n - first);
        for (int k = 1; k <= lanes; ++k) {
          const int i = first + (current - first + k) % lanes;
          if (b.threads[i].state == State::kRunnable) return i;
        }
      }
      for (int first = (n - 1) / 32 * 32; first >= 0; first -= 32) {  // else the highest warp that can run
        for (int i = first; i < std::min(n, first + 32); ++i) {
          if (b.threads[i].state == State::kRunnable) return i;
        }
      }
      return -1;
    }
  }
  return -1;
}

// Fiber mode: back to the scheduler (the calling thread's state says whether it can run again).
inline void fiber_switch_point() {
  ++stats().switches;
  switch_fiber(tl_self, nullptr);
}

inline void run_block_fibers(Block& b) {
  const int n = static_cast<int>(b.threads.size());
  for (int i = 0; i < n; ++i) {
    Thread& t = b.threads[i];
    const std::pair<char*, size_t> stack = fiber_stack(static_cast<size_t>(i));
    t.stack = stack.first;
    t.stack_size = stack.second;
    start_context(t, fiber_main);
  }
  int current = options().schedule == Schedule::kReverse ? 0 : n - 1;  // so that the first pick is 0 / n - 1
  for (;;) {
    const int next = pick_next(b, current);
    if (next < 0) {
      bool all_exited = true;
      for (const Thread& t : b.threads) all_exited = all_exited && t.state == State::kExited;
      if (all_exited) return;
      fail("%s: deadlock: no thread can run:%s", describe_block(b).c_str(), describe_waits(b).c_str());
    }
    current = next;
    tl_self = &b.threads[next];
    switch_fiber(nullptr, tl_self);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Exit, barriers and warp operations, for both modes.

inline bool threads_mode() { return options().mode == Mode::kThreads; }

// Waits (threads mode, lock held) until `done` holds; a wait past the timeout is reported as a hang.
template <typename Done>
inline void wait_threads(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, const Done& done,
                         const char* what, const char* file, int line) {
  const auto limit = std::chrono::duration<double>(options().timeout_s);
  if (!cv.wait_for(lock, limit, done)) {
    fail("%s, %s: waited %.0f s at %s (%s:%d): a hang (run fiber mode for a diagnosis)",
         describe_block(block_state()).c_str(), describe_thread(self()).c_str(), options().timeout_s, what, file,
         line);
  }
}

inline void thread_exit() {
  Thread& t = self();
  Block& b = block_state();
  Warp& w = *b.warps[t.warp];
  const unsigned int bit = 1u << t.lane;
  {
    std::unique_lock<std::mutex> lock(b.mutex, std::defer_lock);
    if (threads_mode()) lock.lock();
    if (b.arrived > 0) {
      fail("%s: %s exited while %d thread(s) wait at __syncthreads (%s:%d)", describe_block(b).c_str(),
           describe_thread(t).c_str(), b.arrived, b.file, b.line);
    }
    ++b.exited;
    if (b.first_exited < 0) b.first_exited = t.tid;
  }
  {
    std::unique_lock<std::mutex> lock(w.mutex, std::defer_lock);
    if (threads_mode()) lock.lock();
    if (w.arrived != 0 && (w.mask & bit) != 0) {
      fail("%s: %s exited while lanes %s wait at %s (%s:%d) with mask %s, which names it",
           describe_block(b).c_str(), describe_thread(t).c_str(), hex_mask(w.arrived).c_str(), op_name(w.op), w.file,
           w.line, hex_mask(w.mask).c_str());
    }
    w.exited |= bit;
  }
  set_state(b, t, State::kExited);
}

inline void syncthreads(const char* file, int line) {
  Thread& t = self();
  Block& b = block_state();
  const int n = static_cast<int>(b.threads.size());
  std::unique_lock<std::mutex> lock(b.mutex, std::defer_lock);
  if (threads_mode()) lock.lock();
  if (b.exited > 0) {
    fail("%s: %s reached __syncthreads (%s:%d) after %d thread(s) of the block exited (first: thread %d)",
         describe_block(b).c_str(), describe_thread(t).c_str(), file, line, b.exited, b.first_exited);
  }
  if (b.arrived == 0) {
    b.file = file;
    b.line = line;
  } else if (b.line != line || std::strcmp(b.file, file) != 0) {
    fail("%s: %s reached __syncthreads at %s:%d while %d thread(s) wait at the one at %s:%d", describe_block(b).c_str(),
         describe_thread(t).c_str(), file, line, b.arrived, b.file, b.line);
  }
  ++b.arrived;
  if (b.arrived == n) {  // the last one releases the others
    b.arrived = 0;
    ++b.generation;
    if (threads_mode()) {
      b.cv.notify_all();
    } else {
      for (Thread& other : b.threads) {
        if (other.state == State::kAtBarrier) set_state(b, other, State::kRunnable);
      }
      fiber_switch_point();
    }
    return;
  }
  t.file = file;
  t.line = line;
  if (threads_mode()) {
    const uint64_t generation = b.generation;
    set_state(b, t, State::kAtBarrier);
    wait_threads(lock, b.cv, [&] { return b.generation != generation; }, "__syncthreads", file, line);
    set_state(b, t, State::kRunnable);
  } else {
    set_state(b, t, State::kAtBarrier);
    fiber_switch_point();
  }
}

inline int source_lane(WarpOp op, int lane, int param) {
  switch (op) {
    case WarpOp::kShflDown: return lane + param < 32 ? lane + param : lane;
    case WarpOp::kShflUp: return lane - param >= 0 ? lane - param : lane;
    case WarpOp::kShflXor: return (lane ^ param) & 31;
    case WarpOp::kShflIdx: return param & 31;
    case WarpOp::kSyncWarp: return lane;
  }
  return lane;
}

// The warp operations: the caller's lane offers `value`, waits until every lane of `mask` has arrived at the same
// operation, and gets the value of its source lane.
inline uint64_t warp_operation(WarpOp op, unsigned int mask, uint64_t value, int param, const char* file, int line) {
  Thread& t = self();
  Block& b = block_state();
  Warp& w = *b.warps[t.warp];
  const unsigned int bit = 1u << t.lane;
  if ((mask & bit) == 0) {
    fail("%s: %s calls %s (%s:%d) with mask %s, which does not name its own lane", describe_block(b).c_str(),
         describe_thread(t).c_str(), op_name(op), file, line, hex_mask(mask).c_str());
  }
  if ((mask & ~w.lanes) != 0) {
    fail("%s: %s calls %s (%s:%d) with mask %s, which names lanes the warp does not have (%s)",
         describe_block(b).c_str(), describe_thread(t).c_str(), op_name(op), file, line, hex_mask(mask).c_str(),
         hex_mask(w.lanes).c_str());
  }
  std::unique_lock<std::mutex> lock(w.mutex, std::defer_lock);
  if (threads_mode()) lock.lock();
  if ((mask & w.exited) != 0) {
    fail("%s: %s calls %s (%s:%d) with mask %s, which names lanes that have exited (%s)", describe_block(b).c_str(),
         describe_thread(t).c_str(), op_name(op), file, line, hex_mask(mask).c_str(), hex_mask(w.exited).c_str());
  }
  if (w.arrived == 0) {
    w.op = op;
    w.mask = mask;
    w.file = file;
    w.line = line;
  } else if (w.op != op || w.mask != mask || w.line != line || std::strcmp(w.file, file) != 0) {
    fail("%s: %s reached %s at %s:%d with mask %s while lanes %s wait at %s at %s:%d with mask %s",
         describe_block(b).c_str(), describe_thread(t).c_str(), op_name(op), file, line, hex_mask(mask).c_str(),
         hex_mask(w.arrived).c_str(), op_name(w.op), w.file, w.line, hex_mask(w.mask).c_str());
  }
  w.values[t.lane] = value;
  w.params[t.lane] = param;
  w.arrived |= bit;
  if (w.arrived == mask) {  // the last lane computes every lane's result and releases the others
    for (int lane = 0; lane < 32; ++lane) {
      if ((mask >> lane & 1u) == 0) continue;
      const int source = source_lane(op, lane, w.params[lane]);
      if ((mask >> source & 1u) == 0) {
        fail("%s: lane %d of warp %d reads lane %d in %s (%s:%d), which is not in the mask %s",
             describe_block(b).c_str(), lane, t.warp, source, op_name(op), file, line, hex_mask(mask).c_str());
      }
      w.results[lane] = w.values[source];
    }
    w.arrived = 0;
    ++w.generation;
    const uint64_t result = w.results[t.lane];
    if (threads_mode()) {
      w.cv.notify_all();
    } else {
      for (Thread& other : b.threads) {
        if (other.warp == t.warp && other.state == State::kAtWarpSync) set_state(b, other, State::kRunnable);
      }
      fiber_switch_point();
    }
    return result;
  }
  t.file = file;
  t.line = line;
  set_state(b, t, State::kAtWarpSync);
  if (threads_mode()) {
    const uint64_t generation = w.generation;
    wait_threads(lock, w.cv, [&] { return w.generation != generation; }, op_name(op), file, line);
    set_state(b, t, State::kRunnable);
  } else {
    fiber_switch_point();
  }
  return w.results[t.lane];
}

template <typename T>
inline T shfl(WarpOp op, unsigned int mask, T value, const char* file, int line, int param, int width = 32) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>, "shuffled values are <= 8 bytes");
  if (width != 32) fail("%s (%s:%d): only width 32 is modelled", op_name(op), file, line);
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  const uint64_t out_bits = warp_operation(op, mask, bits, param, file, line);
  T out;
  std::memcpy(&out, &out_bits, sizeof(T));
  return out;
}

inline void syncwarp(const char* file, int line, unsigned int mask = 0xffffffffu) {
  warp_operation(WarpOp::kSyncWarp, mask, 0, 0, file, line);
}

// A scheduling point without a wait (atomics, fences): fiber mode lets the schedule pick the next thread.
inline void scheduling_point() {
  if (!threads_mode()) fiber_switch_point();
}

template <typename T>
inline T atomic_add(T* address, T value) {
  scheduling_point();
  if (threads_mode()) {
    if constexpr (std::is_integral_v<T>) {
      return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
    } else {
      T expected;
      __atomic_load(address, &expected, __ATOMIC_RELAXED);
      T desired = expected + value;
      while (!__atomic_compare_exchange(address, &expected, &desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        desired = expected + value;
      }
      return expected;
    }
  }
  const T old = *address;
  *address = old + value;
  return old;
}

// ---------------------------------------------------------------------------------------------------------------
// Running a grid.

inline void fiber_main() {
#ifdef CUDASIM_ASAN
  FiberScheduler& s = scheduler();
  __sanitizer_finish_switch_fiber(nullptr, &s.main_stack_bottom, &s.main_stack_size);
#endif
  launch_state().body();
  thread_exit();
  ++stats().switches;
  switch_fiber(tl_self, nullptr, /*exiting=*/true);
  fail("a finished fiber was resumed");
}

inline std::vector<Index> block_order(dim3 grid) {
  std::vector<Index> order;
  order.reserve(static_cast<size_t>(grid.x) * grid.y * grid.z);
  for (unsigned int z = 0; z < grid.z; ++z)
    for (unsigned int y = 0; y < grid.y; ++y)
      for (unsigned int x = 0; x < grid.x; ++x) order.push_back({x, y, z});
  if (options().schedule == Schedule::kReverse) std::reverse(order.begin(), order.end());
  if (options().schedule == Schedule::kRandom) std::shuffle(order.begin(), order.end(), scheduler().rng);
  return order;
}

inline void reset_block(Block& b, Index block_idx, dim3 block) {
  const int n = static_cast<int>(block.x * block.y * block.z);
  b.block_idx = block_idx;
  b.arrived = b.exited = 0;
  b.first_exited = -1;
  b.threads.assign(static_cast<size_t>(n), Thread{});
  b.runnable.clear();
  const int num_warps = (n + 31) / 32;
  while (static_cast<int>(b.warps.size()) < num_warps) b.warps.push_back(std::make_unique<Warp>());
  for (int k = 0; k < num_warps; ++k) {
    Warp& w = *b.warps[k];
    const int lanes = std::min(32, n - 32 * k);
    w.lanes = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
    w.exited = w.arrived = w.mask = 0;
  }
  for (int i = 0; i < n; ++i) {
    Thread& t = b.threads[i];
    t.tid = i;
    t.warp = i / 32;
    t.lane = i % 32;
    t.thread_idx = {static_cast<unsigned int>(i) % block.x, static_cast<unsigned int>(i) / block.x % block.y,
                    static_cast<unsigned int>(i) / (block.x * block.y)};
    t.block_idx = block_idx;
    t.state = State::kExited;  // not yet in the runnable list
    set_state(b, t, State::kRunnable);
  }
}

inline void run_grid_fibers(Launch& launch, const std::vector<Index>& order) {
  Block b;
  launch.block_state = &b;
  for (const Index& block_idx : order) {
    reset_block(b, block_idx, launch.block);
    run_block_fibers(b);
  }
  launch.block_state = nullptr;
}

// Threads mode: one OS thread per CUDA thread of the block, reused for every block of the launch.
inline void run_grid_threads(Launch& launch, const std::vector<Index>& order) {
  Block b;
  launch.block_state = &b;
  const int n = static_cast<int>(launch.block.x * launch.block.y * launch.block.z);
  std::mutex mutex;
  std::condition_variable cv;
  size_t started = 0;  // blocks handed to the pool
  int finished = 0;    // threads done with the current block
  bool stop = false;
  auto worker = [&](int tid) {
    size_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex);
        cv.wait(lock, [&] { return stop || started > seen; });
        if (stop) return;
        seen = started;
      }
      tl_self = &b.threads[tid];
      launch.body();
      thread_exit();
      {
        std::lock_guard<std::mutex> lock(mutex);
        ++finished;
      }
      cv.notify_all();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(n));
  for (int tid = 0; tid < n; ++tid) pool.emplace_back(worker, tid);
  for (const Index& block_idx : order) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      reset_block(b, block_idx, launch.block);
      finished = 0;
      ++started;
    }
    cv.notify_all();
    std::unique_lock<std::mutex> lock(mutex);
    cv.wait(lock, [&] { return finished == n; });
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    stop = true;
  }
  cv.notify_all();
  for (std::thread& thread : pool) thread.join();
  launch.block_state = nullptr;
}

inline void check_configuration(dim3 grid, dim3 block) {
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  const bool ok = grid.x >= 1 && grid.x <= 2147483647u && grid.y >= 1 && grid.y <= 65535 && grid.z >= 1 &&
                  grid.z <= 65535 && block.x >= 1 && block.y >= 1 && block.z >= 1 && block.x <= 1024 &&
                  block.y <= 1024 && block.z <= 64 && threads <= 1024;
  if (!ok) {
    fail("launch %llu: invalid configuration: grid (%u, %u, %u), block (%u, %u, %u) (CUDA would return "
         "cudaErrorInvalidConfiguration)",
         static_cast<unsigned long long>(stats().launches + 1), grid.x, grid.y, grid.z, block.x, block.y, block.z);
  }
}

inline void run_grid(dim3 grid, dim3 block, std::function<void()> body) {
  check_configuration(grid, block);
  static bool seeded = false;
  if (!seeded) {
    scheduler().rng.seed(options().seed);
    seeded = true;
  }
  Launch launch;
  launch.grid = grid;
  launch.block = block;
  launch.number = ++stats().launches;
  launch.body = std::move(body);
  Launch* previous = current_launch();
  current_launch() = &launch;
  const std::vector<Index> order = block_order(grid);
  stats().blocks += order.size();
  stats().threads += order.size() * static_cast<uint64_t>(block.x) * block.y * block.z;
  if (threads_mode()) {
    run_grid_threads(launch, order);
  } else {
    run_grid_fibers(launch, order);
  }
  current_launch() = previous;
  tl_self = nullptr;
}

// kernel<<<grid, block>>>(args...): the arguments are converted to the kernel's parameter types once, as a launch
// copies them, and every CUDA thread calls the kernel with them.
template <typename... Params, typename... Args>
inline void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "a kernel launch passes every parameter");
  std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  run_grid(grid, block, [&] { std::apply(kernel, params); });
}

struct Stream {};

}  // namespace cudasim

// ---------------------------------------------------------------------------------------------------------------
// CUDA built-ins and intrinsics.

#define threadIdx (::cudasim::self().thread_idx)
#define blockIdx (::cudasim::self().block_idx)
#define blockDim (::cudasim::launch_state().block)
#define gridDim (::cudasim::launch_state().grid)

#define __syncthreads() ::cudasim::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::cudasim::syncwarp(__FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__)
#define __shfl_down_sync(mask, value, ...) \
  ::cudasim::shfl(::cudasim::WarpOp::kShflDown, mask, value, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(mask, value, ...) \
  ::cudasim::shfl(::cudasim::WarpOp::kShflUp, mask, value, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(mask, value, ...) \
  ::cudasim::shfl(::cudasim::WarpOp::kShflXor, mask, value, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_sync(mask, value, ...) \
  ::cudasim::shfl(::cudasim::WarpOp::kShflIdx, mask, value, __FILE__, __LINE__, __VA_ARGS__)

inline void __threadfence() { ::cudasim::scheduling_point(); }
inline void __threadfence_block() { ::cudasim::scheduling_point(); }

template <typename T>
inline T __ldcg(const T* address) {
  return *address;
}

template <typename T>
inline T __ldg(const T* address) {
  return *address;
}

inline unsigned int atomicAdd(unsigned int* address, unsigned int value) { return ::cudasim::atomic_add(address, value); }
inline int atomicAdd(int* address, int value) { return ::cudasim::atomic_add(address, value); }
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
  return ::cudasim::atomic_add(address, value);
}
inline float atomicAdd(float* address, float value) { return ::cudasim::atomic_add(address, value); }
inline double atomicAdd(double* address, double value) { return ::cudasim::atomic_add(address, value); }

// The launch layer of csrc/cuda/launch.cuh, on the model.
namespace rdnas {
namespace cuda_launch {

using Stream = ::cudasim::Stream;

template <typename... Params, typename... Args>
inline void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Stream, Args&&... args) {
  ::cudasim::launch(kernel, grid, block, std::forward<Args>(args)...);
}

inline void memset_async(void* ptr, int value, size_t bytes, Stream) {
  ++::cudasim::stats().memsets;
  std::memset(ptr, value, bytes);
}

}  // namespace cuda_launch
}  // namespace rdnas
