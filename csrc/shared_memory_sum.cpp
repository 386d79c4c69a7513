// The summing step of rdnas.shared_memory_sum: an all-reduce (sum) among the P processes of one machine through a
// shared memory arena, for gloo jobs on the CPU, where a TCP all-reduce of a step's gradients costs a few
// milliseconds of copies through the kernel and of waking the waiting process.
//
// Arena layout (the Python side creates and maps it; every address and stride is a multiple of 64 bytes):
//   header: P records of 64 bytes, record q = {int64 arrived: the last call rank q published, int64 bytes[2]: the
//           payload size of its last call of each parity (a rank can be one call ahead of another, never two);
//   data:   2 x P slots of `stride` bytes, slot (parity, q) at data + (parity * P + q) * stride.
// Call `seq` (1, 2, ... on every rank in the same order) of rank r: copy the payload into slot (seq % 2, r),
// publish arrived[r] = seq (release), wait until every arrived[q] >= seq (acquire), then sum the P slots of that
// parity in rank order into the payload: every rank computes the same sum, so every rank gets the same bits.
// Two slot sets make reuse safe: a rank writes slot (seq % 2, r) again only at call seq + 2, after every rank
// arrived at call seq + 1, so after every rank finished reading call seq.
//
// The wait spins (the waiting process has nothing else to do, and a spinning core answers in nanoseconds where a
// sleeping one takes tens of microseconds to wake), yields the core after a few thousand spins (so more processes
// than cores still progress), and sleeps 200 us between looks after a second; it checks Python's signals (Ctrl-C)
// every 0.1 s of sleeping and gives up after `timeout_s`, naming the rank it waited for.
#include <Python.h>

#include <sched.h>
#include <time.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace {

constexpr int64_t kRecordBytes = 64;

struct Record {
  int64_t arrived;
  int64_t bytes[2];
};

inline Record* record(char* base, int64_t q) { return reinterpret_cast<Record*>(base + q * kRecordBytes); }

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

template <typename T>
void sum_slots(char* first, int64_t stride, int64_t size, T* out, int64_t count) {
  std::memcpy(out, first, static_cast<size_t>(count) * sizeof(T));
  for (int64_t q = 1; q < size; ++q) {
    const T* slot = reinterpret_cast<const T*>(first + q * stride);
    for (int64_t i = 0; i < count; ++i) out[i] += slot[i];
  }
}

// Waits (GIL released by the caller) until rank q has published `seq`. Returns 0 when it has, 1 on timeout, -1 when
// a Python signal handler raised (the exception is set).
int wait_for(Record* other, int64_t seq, double timeout_s, PyThreadState** saved) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  auto last_signal_check = start;
  for (int64_t looks = 0;; ++looks) {
    if (__atomic_load_n(&other->arrived, __ATOMIC_ACQUIRE) >= seq) return 0;
    if (looks < 4096) {
      cpu_relax();
      continue;
    }
    if ((looks & 255) != 0) {
      sched_yield();
      continue;
    }
    const auto now = clock::now();
    const double waited = std::chrono::duration<double>(now - start).count();
    if (waited > timeout_s) return 1;
    if (waited < 1.0) {
      sched_yield();
      continue;
    }
    const timespec pause{0, 200000};
    nanosleep(&pause, nullptr);
    if (std::chrono::duration<double>(now - last_signal_check).count() > 0.1) {
      last_signal_check = now;
      PyEval_RestoreThread(*saved);
      const int raised = PyErr_CheckSignals();
      *saved = PyEval_SaveThread();
      if (raised != 0) return -1;
    }
  }
}

}  // namespace

extern "C" PyObject* rdnas_shared_memory_sum(PyObject* /*self*/, PyObject* args) {
  unsigned long long arena = 0, payload = 0;
  long long size = 0, rank = 0, seq = 0, stride = 0, count = 0, itemsize = 0;
  double timeout_s = 0;
  if (!PyArg_ParseTuple(args, "KLLLLKLLd", &arena, &size, &rank, &seq, &stride, &payload, &count, &itemsize,
                        &timeout_s)) {
    return nullptr;
  }
  const int64_t bytes = count * itemsize;
  if (size < 1 || rank < 0 || rank >= size || seq < 1 || count < 0 || (itemsize != 4 && itemsize != 8) ||
      stride % kRecordBytes != 0 || bytes > stride || arena == 0 || (count > 0 && payload == 0)) {
    PyErr_Format(PyExc_ValueError,
                 "rdnas._C.shared_memory_sum: bad call (size %lld, rank %lld, seq %lld, stride %lld, count %lld, "
                 "itemsize %lld)",
                 size, rank, seq, stride, count, itemsize);
    return nullptr;
  }
  char* base = reinterpret_cast<char*>(static_cast<uintptr_t>(arena));
  char* data = base + size * kRecordBytes;
  char* slots = data + (seq % 2) * size * stride;
  char* mine = reinterpret_cast<char*>(static_cast<uintptr_t>(payload));
  int64_t late = -1, mismatch = -1, their_bytes = 0;
  int interrupted = 0;
  PyThreadState* saved = PyEval_SaveThread();
  if (bytes > 0) std::memcpy(slots + rank * stride, mine, static_cast<size_t>(bytes));
  Record* own = record(base, rank);
  __atomic_store_n(&own->bytes[seq % 2], bytes, __ATOMIC_RELAXED);
  __atomic_store_n(&own->arrived, static_cast<int64_t>(seq), __ATOMIC_RELEASE);
  for (int64_t q = 0; q < size && late < 0 && interrupted == 0; ++q) {
    if (q == rank) continue;
    const int outcome = wait_for(record(base, q), seq, timeout_s, &saved);
    if (outcome > 0) late = q;
    if (outcome < 0) interrupted = 1;
  }
  if (late < 0 && interrupted == 0) {
    for (int64_t q = 0; q < size; ++q) {
      their_bytes = __atomic_load_n(&record(base, q)->bytes[seq % 2], __ATOMIC_RELAXED);
      if (their_bytes != bytes) {
        mismatch = q;
        break;
      }
    }
    if (mismatch < 0 && count > 0) {
      if (itemsize == 4) {
        sum_slots(slots, stride, size, reinterpret_cast<float*>(mine), count);
      } else {
        sum_slots(slots, stride, size, reinterpret_cast<double*>(mine), count);
      }
    }
  }
  PyEval_RestoreThread(saved);
  if (interrupted != 0) return nullptr;
  if (late >= 0) {
    char waited[32];  // PyErr_Format has no float conversions
    std::snprintf(waited, sizeof(waited), "%g", timeout_s);
    PyErr_Format(PyExc_TimeoutError,
                 "rdnas.shared_memory_sum: rank %lld waited %s s for rank %lld to reach the same sum (call %lld); "
                 "that rank has failed, hangs, or runs other collectives (RDNAS_DIST_TIMEOUT sets the limit)",
                 rank, waited, static_cast<long long>(late), seq);
    return nullptr;
  }
  if (mismatch >= 0) {
    PyErr_Format(PyExc_RuntimeError,
                 "rdnas.shared_memory_sum: rank %lld sums %lld bytes but rank %lld sums %lld bytes in the same call "
                 "(%lld); the ranks must reduce tensors of the same size",
                 rank, static_cast<long long>(bytes), static_cast<long long>(mismatch),
                 static_cast<long long>(their_bytes), seq);
    return nullptr;
  }
  Py_RETURN_NONE;
}
