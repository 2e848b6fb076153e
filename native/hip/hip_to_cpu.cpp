// hip_to_cpu.cpp: the HIP-on-CPU executor behind hip_to_cpu.h (native/hip/build.sh --cpu compiles it with the
// .hip sources). What it models and why is in that header; this file is its machinery:
//   - fibers: a stack and a saved stack pointer per GPU thread of a block, switched by a few instructions of
//     assembly on x86-64 (ucontext elsewhere), annotated for AddressSanitizer so that it follows the switches;
//   - the block scheduler: runs fibers until they block, then releases complete warps and complete barriers in
//     the schedule's order, and turns anything else (a barrier some threads never reach) into a launch failure;
//   - a small pool of worker threads that claim blocks in the schedule's block order;
//   - the runtime: one device, a registry of device allocations, streams that queue work until the host
//     synchronizes, and HIP's error reporting (sticky faults are reported once, then cleared).
#include "hip_to_cpu.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define HIPCPU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HIPCPU_ASAN 1
#endif
#endif
#if defined(HIPCPU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__) && !defined(ARWKV_HIP_CPU_UCONTEXT)
#define ARWKV_HIP_CPU_UCONTEXT 1
#endif
#if defined(ARWKV_HIP_CPU_UCONTEXT)
#include <ucontext.h>
#endif

namespace hipcpu {
namespace {

// ---- context switching -------------------------------------------------------------------------------------------
#if !defined(ARWKV_HIP_CPU_UCONTEXT)
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores the stack pointer
// in *save, loads `load` and restores the same from there. glibc's swapcontext would also save the signal mask
// with a system call on every switch, which costs more than most kernels' work between two barriers.
extern "C" void hipcpu_switch_context(void** save, void* load);
asm(R"(
    .text
    .globl hipcpu_switch_context
    .hidden hipcpu_switch_context
    .type hipcpu_switch_context, @function
hipcpu_switch_context:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size hipcpu_switch_context, .-hipcpu_switch_context
)");

struct Context {
    void* sp = nullptr;
};

// Lays out a frame that hipcpu_switch_context "returns" from into entry, with the stack aligned as after a call.
void make_context(Context& context, char* stack, size_t size, void (*entry)()) {
    const uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~static_cast<uintptr_t>(15);
    uint64_t* sp = reinterpret_cast<uint64_t*>(top - 72);
    uint32_t mxcsr;
    uint16_t fpu_control;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpu_control));
    sp[0] = mxcsr | (static_cast<uint64_t>(fpu_control) << 32);
    for (int i = 1; i <= 6; i++) sp[i] = 0;  // r15 r14 r13 r12 rbx rbp
    sp[7] = reinterpret_cast<uint64_t>(entry);
    sp[8] = 0;  // entry's own return address: it never returns
    context.sp = sp;
}

void jump(Context& from, Context& to) { hipcpu_switch_context(&from.sp, to.sp); }
#else
struct Context {
    ucontext_t uc;
};

void make_context(Context& context, char* stack, size_t size, void (*entry)()) {
    getcontext(&context.uc);
    context.uc.uc_stack.ss_sp = stack;
    context.uc.uc_stack.ss_size = size;
    context.uc.uc_link = nullptr;
    makecontext(&context.uc, entry, 0);
}

void jump(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

#if defined(HIPCPU_ASAN)
constexpr size_t kFiberStackBytes = 512 * 1024;  // AddressSanitizer's redzones make frames several times larger
#else
constexpr size_t kFiberStackBytes = 128 * 1024;
#endif
constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxSharedBytes = 64 * 1024;

// ---- configuration -------------------------------------------------------------------------------------------------

enum class Order : int { Forward = 0, Reverse = 1, Shuffle = 2 };

struct Schedule {
    Order order = Order::Forward;
    uint64_t seed = 0;
};

std::mutex g_schedule_mutex;
Schedule g_schedule;

size_t g_memory_limit = size_t{8} << 30;
int g_worker_count = 2;

// Reads ARWKV_HIP_CPU_ORDER (forward | reverse | shuffle[:SEED]), ARWKV_HIP_CPU_THREADS and ARWKV_HIP_CPU_MEMORY
// (bytes of "device" memory) once.
void configure_once() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (const char* order = getenv("ARWKV_HIP_CPU_ORDER")) {
            if (strcmp(order, "reverse") == 0) {
                g_schedule.order = Order::Reverse;
            } else if (strncmp(order, "shuffle", 7) == 0) {
                g_schedule.order = Order::Shuffle;
                g_schedule.seed = order[7] == ':' ? strtoull(order + 8, nullptr, 10) : 1;
            } else if (strcmp(order, "forward") != 0) {
                fprintf(stderr, "hip_to_cpu: ARWKV_HIP_CPU_ORDER='%s' is not forward, reverse or shuffle[:SEED]; using forward\n",
                        order);
            }
        }
        unsigned hardware = std::thread::hardware_concurrency();
        g_worker_count = static_cast<int>(hardware == 0 ? 1 : std::min(hardware, 4u));
        if (const char* threads = getenv("ARWKV_HIP_CPU_THREADS")) {
            const long value = strtol(threads, nullptr, 10);
            if (value >= 1 && value <= 256) g_worker_count = static_cast<int>(value);
        }
        if (const char* memory = getenv("ARWKV_HIP_CPU_MEMORY")) {
            const unsigned long long value = strtoull(memory, nullptr, 10);
            if (value > 0) g_memory_limit = static_cast<size_t>(value);
        }
    });
}

Schedule current_schedule() {
    std::lock_guard<std::mutex> lock(g_schedule_mutex);
    return g_schedule;
}

// SplitMix64: a seed per (launch, block) from one number, so a shuffled run is reproducible whichever worker
// thread runs which block.
uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

template <typename T>
void apply_order(std::vector<T>& items, Order order, uint64_t seed) {
    if (order == Order::Reverse) {
        std::sort(items.begin(), items.end(), [](T a, T b) { return a > b; });
    } else if (order == Order::Shuffle) {
        std::sort(items.begin(), items.end());
        std::mt19937_64 rng(seed);
        for (size_t i = items.size(); i > 1; i--) std::swap(items[i - 1], items[rng() % i]);
    } else {
        std::sort(items.begin(), items.end());
    }
}

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
    char buffer[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(buffer, sizeof buffer, fmt, args);
    va_end(args);
    return buffer;
}

// ---- launches and fibers -------------------------------------------------------------------------------------------

struct Launch {
    std::string name;
    dim3 grid, block;
    size_t shared_bytes = 0;
    std::function<void()> body;
    uint64_t sequence = 0;  // which launch this is, for the schedule's seeds
};

enum class State : uint8_t { Ready, AtBarrier, AtWarp, Done };

const char* describe(State state) {
    switch (state) {
        case State::Ready: return "running";
        case State::AtBarrier: return "waiting at __syncthreads";
        case State::AtWarp: return "waiting at a warp shuffle";
        case State::Done: return "returned";
    }
    return "?";
}

struct Fiber {
    Context context;
    char* stack = nullptr;
    ThreadCoordinates coordinates;
    State state = State::Ready;
    ShuffleOp op = ShuffleOp::Index;
    int argument = 0;
    int width = 0;
    uint64_t bits = 0;
    uint64_t result = 0;
};

// One per OS thread that runs blocks: its fibers, its scheduler context and the block it is running.
class Worker {
public:
    Worker() {
        // One mapping for every fiber's stack, each with an inaccessible guard page below it, so that a stack
        // overflow is a segmentation fault instead of another fiber's corrupted frame.
        const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
        stride_ = kFiberStackBytes + page;
        const size_t bytes = stride_ * kMaxThreadsPerBlock;
        void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED) {
            fprintf(stderr, "hip_to_cpu: cannot map %zu bytes of fiber stacks\n", bytes);
            abort();
        }
        stacks_ = static_cast<char*>(base);
        for (int i = 0; i < kMaxThreadsPerBlock; i++) mprotect(stacks_ + i * stride_, page, PROT_NONE);
        fibers_.resize(kMaxThreadsPerBlock);
        for (int i = 0; i < kMaxThreadsPerBlock; i++) fibers_[i].stack = stacks_ + i * stride_ + page;
        shared_.resize(kMaxSharedBytes);
    }

    // Runs every thread of one block to completion. False (and fault_ set) when the block failed.
    bool run_block(const Launch& launch, dim3 block_idx, uint64_t seed, Order order) {
        launch_ = &launch;
        fault_.clear();
        const int nx = static_cast<int>(launch.block.x), ny = static_cast<int>(launch.block.y);
        count_ = nx * ny * static_cast<int>(launch.block.z);
        block_idx_ = block_idx;
        order_ = order;
        rng_.seed(seed);
        for (int i = 0; i < count_; i++) {
            Fiber& fiber = fibers_[i];
            fiber.coordinates.thread_idx = dim3(static_cast<uint32_t>(i % nx), static_cast<uint32_t>((i / nx) % ny),
                                                static_cast<uint32_t>(i / (nx * ny)));
            fiber.coordinates.block_idx = block_idx;
            fiber.coordinates.block_dim = launch.block;
            fiber.coordinates.grid_dim = launch.grid;
            fiber.state = State::Ready;
#if defined(HIPCPU_ASAN)
            // An abandoned or finished fiber's frames may still be poisoned.
            ASAN_UNPOISON_MEMORY_REGION(fiber.stack, kFiberStackBytes);
#endif
            make_context(fiber.context, fiber.stack, kFiberStackBytes, &Worker::entry);
        }
        if (launch.shared_bytes > 0) memset(shared_.data(), 0xff, launch.shared_bytes);
        queue_.clear();
        for (int i = 0; i < count_; i++) queue_.push_back(i);
        arrange(queue_);
        for (;;) {
            for (size_t q = 0; q < queue_.size(); q++) {
                enter(&fibers_[queue_[q]]);
                if (!fault_.empty()) return false;
            }
            queue_.clear();
            if (!release()) return fault_.empty();
        }
    }

    const std::string& fault() const { return fault_; }
    Fiber* current() const { return current_; }
    void* shared_memory() { return shared_.data(); }

    void block_at(State state) {
        current_->state = state;
        leave(false);
    }

    [[noreturn]] void fail(const std::string& message) {
        fault_ = message;
        current_->state = State::Done;
        leave(true);
        __builtin_unreachable();
    }

    const Launch& launch() const { return *launch_; }
    int thread_count() const { return count_; }

private:
    static void entry();

    void arrange(std::vector<int>& items) {
        if (order_ == Order::Shuffle) apply_order(items, order_, rng_());
        else apply_order(items, order_, 0);
    }

    void enter(Fiber* fiber) {
        current_ = fiber;
#if defined(HIPCPU_ASAN)
        void* fake_stack = nullptr;
        __sanitizer_start_switch_fiber(&fake_stack, fiber->stack, kFiberStackBytes);
        jump(scheduler_, fiber->context);
        __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
        jump(scheduler_, fiber->context);
#endif
    }

    // Back to the scheduler; `exiting` fibers are never resumed (AddressSanitizer then drops their fake stack).
    void leave(bool exiting) {
        Fiber* fiber = current_;
#if defined(HIPCPU_ASAN)
        void* fake_stack = nullptr;
        __sanitizer_start_switch_fiber(exiting ? nullptr : &fake_stack, scheduler_bottom_, scheduler_size_);
        jump(fiber->context, scheduler_);
        __sanitizer_finish_switch_fiber(fake_stack, &scheduler_bottom_, &scheduler_size_);
#else
        (void)exiting;
        jump(fiber->context, scheduler_);
#endif
    }

    std::string thread_ranges(State state) const {
        std::string text;
        for (int i = 0; i < count_;) {
            if (fibers_[i].state != state) {
                i++;
                continue;
            }
            int j = i;
            while (j + 1 < count_ && fibers_[j + 1].state == state) j++;
            if (!text.empty()) text += ",";
            text += i == j ? format("%d", i) : format("%d-%d", i, j);
            i = j + 1;
        }
        return text;
    }

    std::string where() const {
        return format("kernel %s, block (%u,%u,%u) of %d threads", launch_->name.c_str(), block_idx_.x, block_idx_.y,
                      block_idx_.z, count_);
    }

    // Called when no fiber can run: releases every warp whose lanes all wait at a shuffle, else the block barrier
    // when every thread waits at it. False when the block is finished or stuck (then fault_ says how).
    bool release() {
        int done = 0, at_barrier = 0;
        for (int i = 0; i < count_; i++) {
            done += fibers_[i].state == State::Done;
            at_barrier += fibers_[i].state == State::AtBarrier;
        }
        if (done == count_) return false;
        const int warp = ARWKV_HIP_CPU_WARP_SIZE;
        for (int base = 0; base < count_; base += warp) {
            const int lanes = std::min(warp, count_ - base);
            bool complete = true;
            for (int l = 0; l < lanes && complete; l++) complete = fibers_[base + l].state == State::AtWarp;
            if (complete && !release_warp(base, lanes)) return false;
        }
        if (!queue_.empty()) {
            arrange(queue_);
            return true;
        }
        if (at_barrier == count_) {
            for (int i = 0; i < count_; i++) {
                fibers_[i].state = State::Ready;
                queue_.push_back(i);
            }
            arrange(queue_);
            return true;
        }
        std::string states;
        for (State state : {State::AtBarrier, State::AtWarp, State::Done}) {
            std::string ranges = thread_ranges(state);
            if (!ranges.empty()) states += format("%sthreads %s %s", states.empty() ? "" : "; ", ranges.c_str(),
                                                  describe(state));
        }
        fault_ = where() + ": a barrier or warp shuffle that not every thread reaches (" + states + ")";
        return false;
    }

    bool release_warp(int base, int lanes) {
        const Fiber& first = fibers_[base];
        const int width = first.width;
        if (width < 1 || width > ARWKV_HIP_CPU_WARP_SIZE || (width & (width - 1)) != 0) {
            fault_ = where() + format(": warp shuffle width %d is not a power of two up to the warp size %d", width,
                                      ARWKV_HIP_CPU_WARP_SIZE);
            return false;
        }
        for (int l = 0; l < lanes; l++) {
            const Fiber& lane = fibers_[base + l];
            if (lane.op != first.op || lane.width != width) {
                fault_ = where() + format(": the lanes of warp %d meet at different shuffles (thread %d and %d)",
                                          base / ARWKV_HIP_CPU_WARP_SIZE, base, base + l);
                return false;
            }
        }
        for (int self = 0; self < lanes; self++) {
            Fiber& lane = fibers_[base + self];
            const int segment = self & ~(width - 1);
            int index = self;
            switch (lane.op) {
                case ShuffleOp::Index: index = (lane.argument & (width - 1)) + segment; break;
                case ShuffleOp::Xor: {
                    const int target = self ^ lane.argument;
                    index = target >= segment + width || target < 0 ? self : target;
                    break;
                }
                case ShuffleOp::Down: index = (self & (width - 1)) + lane.argument >= width ? self : self + lane.argument; break;
                case ShuffleOp::Up: index = self - lane.argument < segment ? self : self - lane.argument; break;
            }
            if (index >= lanes) {
                fault_ = where() + format(": thread %d's shuffle reads lane %d, which its warp of %d threads does not have",
                                          base + self, index, lanes);
                return false;
            }
            lane.result = fibers_[base + index].bits;
        }
        for (int l = 0; l < lanes; l++) {
            fibers_[base + l].state = State::Ready;
            queue_.push_back(base + l);
        }
        return true;
    }

    size_t stride_ = 0;
    char* stacks_ = nullptr;
    std::vector<Fiber> fibers_;
    std::vector<unsigned char> shared_;
    std::vector<int> queue_;
    Context scheduler_;
#if defined(HIPCPU_ASAN)
    const void* scheduler_bottom_ = nullptr;
    size_t scheduler_size_ = 0;
#endif
    Fiber* current_ = nullptr;
    const Launch* launch_ = nullptr;
    dim3 block_idx_;
    int count_ = 0;
    Order order_ = Order::Forward;
    std::mt19937_64 rng_;
    std::string fault_;
};

thread_local Worker* t_worker = nullptr;

void Worker::entry() {
    Worker* worker = t_worker;
#if defined(HIPCPU_ASAN)
    __sanitizer_finish_switch_fiber(nullptr, &worker->scheduler_bottom_, &worker->scheduler_size_);
#endif
    worker->launch_->body();
    worker->current_->state = State::Done;
    worker->leave(true);
    __builtin_unreachable();
}

// Worker threads that claim the blocks of one launch at a time. Never destroyed: joining threads from a static
// destructor while the host process exits can deadlock, and the threads only sleep between launches.
class Pool {
public:
    explicit Pool(int count) {
        for (int i = 0; i < count; i++) std::thread([this] { loop(); }).detach();
        workers_ = count;
    }

    // Runs every block of `launch` in the schedule's block order; the first failure stops the rest.
    std::string run(const Launch& launch, const Schedule& schedule) {
        const uint64_t total = static_cast<uint64_t>(launch.grid.x) * launch.grid.y * launch.grid.z;
        std::vector<uint64_t> order(total);
        for (uint64_t i = 0; i < total; i++) order[i] = i;
        apply_order(order, schedule.order, mix(schedule.seed ^ mix(launch.sequence)));
        std::unique_lock<std::mutex> lock(mutex_);
        launch_ = &launch;
        schedule_ = schedule;
        blocks_ = &order;
        next_.store(0);
        failed_.store(false);
        fault_.clear();
        active_ = workers_;
        generation_++;
        work_.notify_all();
        done_.wait(lock, [this] { return active_ == 0; });
        launch_ = nullptr;
        return fault_;
    }

private:
    void loop() {
        Worker worker;
        t_worker = &worker;
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            work_.wait(lock, [&] { return generation_ != seen; });
            seen = generation_;
            const Launch& launch = *launch_;
            const Schedule schedule = schedule_;
            const std::vector<uint64_t>& blocks = *blocks_;
            lock.unlock();
            for (;;) {
                const uint64_t claim = next_.fetch_add(1);
                if (claim >= blocks.size() || failed_.load()) break;
                const uint64_t linear = blocks[claim];
                const dim3 block_idx(static_cast<uint32_t>(linear % launch.grid.x),
                                     static_cast<uint32_t>((linear / launch.grid.x) % launch.grid.y),
                                     static_cast<uint32_t>(linear / (static_cast<uint64_t>(launch.grid.x) * launch.grid.y)));
                const uint64_t seed = mix(schedule.seed ^ mix(launch.sequence ^ mix(linear)));
                if (!worker.run_block(launch, block_idx, seed, schedule.order)) {
                    bool expected = false;
                    if (failed_.compare_exchange_strong(expected, true)) fault_ = worker.fault();
                    break;
                }
            }
            lock.lock();
            if (--active_ == 0) done_.notify_all();
        }
    }

    std::mutex mutex_;
    std::condition_variable work_, done_;
    uint64_t generation_ = 0;
    int workers_ = 0;
    int active_ = 0;
    const Launch* launch_ = nullptr;
    Schedule schedule_;
    const std::vector<uint64_t>* blocks_ = nullptr;
    std::atomic<uint64_t> next_{0};
    std::atomic<bool> failed_{false};
    std::string fault_;
};

Pool& pool() {
    static Pool* instance = new Pool(g_worker_count);
    return *instance;
}

// ---- the runtime ---------------------------------------------------------------------------------------------------

struct Operation {
    std::function<std::string()> run;  // empty string = success, otherwise the fault
};

}  // namespace
}  // namespace hipcpu

struct ihipStream_t {
    std::deque<hipcpu::Operation> queue;
};

namespace hipcpu {
namespace {

// Everything below is guarded by one lock: host threads may share the device, and the work queued on streams runs
// on the thread that synchronizes, under the lock.
std::mutex g_runtime_mutex;
std::map<uintptr_t, size_t> g_allocations;  // base -> bytes
size_t g_allocated = 0;
ihipStream_t g_default_stream;
std::vector<ihipStream_t*> g_streams;
uint64_t g_launches = 0;
// A fault raised while running queued work: reported by the next call that waits for work, then cleared.
std::string g_pending_fault;
thread_local hipError_t t_last_error = hipSuccess;
thread_local std::string t_fault_detail;

hipError_t record(hipError_t error) {
    if (error != hipSuccess) t_last_error = error;
    return error;
}

// The allocation [base, base+bytes] containing p (the end address counts: an empty view at the end of a tensor).
bool find_allocation(const void* p, uintptr_t* base, size_t* bytes) {
    const uintptr_t address = reinterpret_cast<uintptr_t>(p);
    auto it = g_allocations.upper_bound(address);
    if (it == g_allocations.begin()) return false;
    --it;
    if (address > it->first + it->second) return false;
    if (base) *base = it->first;
    if (bytes) *bytes = it->second;
    return true;
}

bool is_device_range(const void* p, size_t bytes) {
    uintptr_t base;
    size_t size;
    if (!find_allocation(p, &base, &size)) return false;
    return reinterpret_cast<uintptr_t>(p) + bytes <= base + size;
}

ihipStream_t* resolve(hipStream_t stream) { return stream == nullptr ? &g_default_stream : stream; }

bool known_stream(hipStream_t stream) {
    return stream == nullptr || std::find(g_streams.begin(), g_streams.end(), stream) != g_streams.end();
}

// Runs the queued work of one stream in order; a fault drops what was queued after it (its inputs are garbage).
void drain(ihipStream_t* stream) {
    while (!stream->queue.empty()) {
        Operation operation = std::move(stream->queue.front());
        stream->queue.pop_front();
        std::string fault = operation.run();
        if (!fault.empty()) {
            if (g_pending_fault.empty()) g_pending_fault = fault;
            stream->queue.clear();
        }
    }
}

void drain_all() {
    drain(&g_default_stream);
    for (ihipStream_t* stream : g_streams) drain(stream);
}

// The result of a call that waited for queued work.
hipError_t take_pending_fault() {
    if (g_pending_fault.empty()) return hipSuccess;
    t_fault_detail = g_pending_fault;
    g_pending_fault.clear();
    return record(hipErrorLaunchFailure);
}

}  // namespace

const ThreadCoordinates& coordinates() { return t_worker->current()->coordinates; }

void syncthreads() { t_worker->block_at(State::AtBarrier); }

uint64_t warp_shuffle(ShuffleOp op, int argument, int width, uint64_t bits) {
    Fiber* fiber = t_worker->current();
    fiber->op = op;
    fiber->argument = argument;
    fiber->width = width;
    fiber->bits = bits;
    t_worker->block_at(State::AtWarp);
    return fiber->result;
}

void trap(const char* message) {
    const dim3& t = t_worker->current()->coordinates.thread_idx;
    const dim3& b = t_worker->current()->coordinates.block_idx;
    t_worker->fail(format("kernel %s, block (%u,%u,%u), thread (%u,%u,%u): %s", t_worker->launch().name.c_str(), b.x,
                          b.y, b.z, t.x, t.y, t.z, message));
}

void* dynamic_shared_memory() { return t_worker->shared_memory(); }

void enqueue_kernel(const char* name, dim3 grid, dim3 block, size_t shared_bytes, hipStream_t stream,
                    std::function<void()> body, const void* const* pointer_arguments, int pointer_count) {
    configure_once();
    std::lock_guard<std::mutex> lock(g_runtime_mutex);
    const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535 ||
        threads == 0 || threads > kMaxThreadsPerBlock || block.z > 64 || shared_bytes > kMaxSharedBytes) {
        t_fault_detail = format("launching %s with grid (%u,%u,%u), block (%u,%u,%u) and %zu bytes of dynamic shared "
                                "memory: not a valid configuration (at most %d threads, %zu bytes)",
                                name, grid.x, grid.y, grid.z, block.x, block.y, block.z, shared_bytes,
                                kMaxThreadsPerBlock, kMaxSharedBytes);
        record(hipErrorInvalidConfiguration);
        return;
    }
    if (!known_stream(stream)) {
        t_fault_detail = format("launching %s on a stream that does not exist", name);
        record(hipErrorInvalidResourceHandle);
        return;
    }
    // A GPU would fault on a host pointer; here it would silently work, so it is refused at the launch.
    for (int i = 0; i < pointer_count; i++) {
        if (pointer_arguments[i] != nullptr && !find_allocation(pointer_arguments[i], nullptr, nullptr)) {
            t_fault_detail = format("launching %s: pointer argument %d (%p) is not device memory", name, i,
                                    pointer_arguments[i]);
            record(hipErrorInvalidValue);
            return;
        }
    }
    auto launch = std::make_shared<Launch>();
    launch->name = name;
    launch->grid = grid;
    launch->block = block;
    launch->shared_bytes = shared_bytes;
    launch->body = std::move(body);
    launch->sequence = g_launches++;
    resolve(stream)->queue.push_back(Operation{[launch] { return pool().run(*launch, current_schedule()); }});
}

bool set_schedule(int order, uint64_t seed) {
    if (order < 0 || order > 2) return false;
    std::lock_guard<std::mutex> lock(g_schedule_mutex);
    g_schedule.order = static_cast<Order>(order);
    g_schedule.seed = seed;
    return true;
}

const char* last_fault_detail() { return t_fault_detail.c_str(); }

}  // namespace hipcpu

using namespace hipcpu;

// ---- HIP runtime API -----------------------------------------------------------------------------------------------

const char* hipGetErrorName(hipError_t error) {
    switch (error) {
        case hipSuccess: return "hipSuccess";
        case hipErrorInvalidValue: return "hipErrorInvalidValue";
        case hipErrorOutOfMemory: return "hipErrorOutOfMemory";
        case hipErrorInvalidConfiguration: return "hipErrorInvalidConfiguration";
        case hipErrorNoDevice: return "hipErrorNoDevice";
        case hipErrorInvalidDevice: return "hipErrorInvalidDevice";
        case hipErrorInvalidResourceHandle: return "hipErrorInvalidResourceHandle";
        case hipErrorLaunchFailure: return "hipErrorLaunchFailure";
    }
    return "hipErrorUnknown";
}

const char* hipGetErrorString(hipError_t error) {
    switch (error) {
        case hipSuccess: return "no error";
        case hipErrorInvalidValue: return "invalid argument";
        case hipErrorOutOfMemory: return "out of memory";
        case hipErrorInvalidConfiguration: return "invalid configuration argument";
        case hipErrorNoDevice: return "no HIP-capable device is detected";
        case hipErrorInvalidDevice: return "invalid device ordinal";
        case hipErrorInvalidResourceHandle: return "invalid resource handle";
        case hipErrorLaunchFailure: return "unspecified launch failure";
    }
    return "unknown error";
}

hipError_t hipGetLastError(void) {
    const hipError_t error = t_last_error;
    t_last_error = hipSuccess;
    return error;
}

hipError_t hipPeekAtLastError(void) { return t_last_error; }

hipError_t hipGetDeviceCount(int* count) {
    if (count == nullptr) return record(hipErrorInvalidValue);
    *count = 1;
    return hipSuccess;
}

hipError_t hipGetDeviceProperties(hipDeviceProp_t* props, int device) {
    configure_once();
    if (props == nullptr) return record(hipErrorInvalidValue);
    if (device != 0) return record(hipErrorInvalidDevice);
    memset(props, 0, sizeof *props);
    snprintf(props->name, sizeof props->name, "HIP-on-CPU executor (not a GPU; warp size %d, %d worker threads)",
             ARWKV_HIP_CPU_WARP_SIZE, g_worker_count);
    snprintf(props->gcnArchName, sizeof props->gcnArchName, "cpu-executor-w%d", ARWKV_HIP_CPU_WARP_SIZE);
    props->totalGlobalMem = g_memory_limit;
    props->sharedMemPerBlock = kMaxSharedBytes;
    props->multiProcessorCount = g_worker_count;
    props->warpSize = ARWKV_HIP_CPU_WARP_SIZE;
    props->maxThreadsPerBlock = kMaxThreadsPerBlock;
    return hipSuccess;
}

hipError_t hipSetDevice(int device) { return device == 0 ? hipSuccess : record(hipErrorInvalidDevice); }

hipError_t hipGetDevice(int* device) {
    if (device == nullptr) return record(hipErrorInvalidValue);
    *device = 0;
    return hipSuccess;
}

hipError_t hipDeviceSynchronize(void) {
    std::lock_guard<std::mutex> lock(g_runtime_mutex);
    drain_all();
    return take_pending_fault();
}

hipError_t hipRuntimeGetVersion(int* version) {
    if (version == nullptr) return record(hipErrorInvalidValue);
    *version = 1;  // the executor's own version, not a ROCm one
    return hipSuccess;
}

hipError_t hipDriverGetVersion(int* version) { return hipRuntimeGetVersion(version); }

hipError_t hipMalloc(void** ptr, size_t bytes) {
    configure_once();
    if (ptr == nullptr) return record(hipErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_runtime_mutex);
    *ptr = nullptr;
    if (bytes == 0) return hipSuccess;
    if (bytes > g_memory_limit - g_allocated) {
        t_fault_detail = format("hipMalloc of %zu bytes with %zu of %zu bytes of executor memory in use (set "
                                "ARWKV_HIP_CPU_MEMORY to change the limit)",
                                bytes, g_allocated, g_memory_limit);
        return record(hipErrorOutOfMemory);
    }
    void* memory = nullptr;
    if (posix_memalign(&memory, 256, bytes) != 0) return record(hipErrorOutOfMemory);
    memset(memory, 0xff, bytes);
    g_allocations[reinterpret_cast<uintptr_t>(memory)] = bytes;
    g_allocated += bytes;
    *ptr = memory;
    return hipSuccess;
}

hipError_t hipFree(void* ptr) {
    std::lock_guard<std::mutex> lock(g_runtime_mutex);
    // Like hipFree on a GPU, this waits for the device: queued work may still read the buffer.
    drain_all();
    if (ptr == nullptr) return hipSuccess;
    auto it = g_allocations.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == g_allocations.end()) {
        t_fault_detail = format("hipFree(%p): not the start of a device allocation", ptr);
        return record(hipErrorInvalidValue);
    }
    g_allocated -= it->second;
    g_allocations.erase(it);
    free(ptr);
    return hipSuccess;
}

hipError_t hipMemcpyAsync(void* dst, const void* src, size_t bytes, hipMemcpyKind kind, hipStream_t stream) {
    std::lock_guard<std::mutex> lock(g_runtime_mutex);
    if (!known_stream(stream)) return record(hipErrorInvalidResourceHandle);
    if (bytes == 0) return hipSuccess;
    const bool dst_device = kind == hipMemcpyHostToDevice || kind == hipMemcpyDeviceToDevice;
    const bool src_device = kind == hipMemcpyDeviceToHost || kind == hipMemcpyDeviceToDevice;
    if ((dst_device && !is_device_range(dst, bytes)) || (src_device && !is_device_range(src, bytes)) ||
        (!dst_device && find_allocation(dst, nullptr, nullptr)) || (!src_device && find_allocation(src, nullptr, nullptr))) {
        t_fault_detail = format("hipMemcpyAsync of %zu bytes from %p to %p (kind %d): a device side is not inside one "
                                "device allocation, or a host side is device memory",
                                bytes, src, dst, static_cast<int>(kind));
        return record(hipErrorInvalidValue);
    }
    ihipStream_t* queue = resolve(stream);
    if (kind == hipMemcpyHostToDevice) {
        // Pageable host memory: the source is staged now, so the caller may reuse it when the call returns.
        auto staged = std::make_shared<std::vector<unsigned char>>(static_cast<const unsigned char*>(src),
                                                                   static_cast<const unsigned char*>(src) + bytes);
        queue->queue.push_back(Operation{[dst, staged] {
            memcpy(dst, staged->data(), staged->size());
            return std::string();
        }});
        return hipSuccess;
    }
    if (kind == hipMemcpyDeviceToHost) {
        // Into pageable host memory the copy completes before the call returns, after the work queued before it.
        drain(queue);
        const hipError_t fault = take_pending_fault();
        if (fault != hipSuccess) return fault;
        memcpy(dst, src, bytes);
        return hipSuccess;
    }
    queue->queue.push_back(Operation{[dst, src, bytes] {
        memmove(dst, src, bytes);
        return std::string();
    }});
    return hipSuccess;
}

hipError_t hipMemsetAsync(void* dst, int value, size_t bytes, hipStream_t stream) {
    std::lock_guard<std::mutex> lock(g_runtime_mutex);
    if (!known_stream(stream)) return record(hipErrorInvalidResourceHandle);
    if (bytes == 0) return hipSuccess;
    if (!is_device_range(dst, bytes)) {
        t_fault_detail = format("hipMemsetAsync of %zu bytes at %p: not inside one device allocation", bytes, dst);
        return record(hipErrorInvalidValue);
    }
    resolve(stream)->queue.push_back(Operation{[dst, value, bytes] {
        memset(dst, value, bytes);
        return std::string();
    }});
    return hipSuccess;
}

hipError_t hipStreamCreateWithFlags(hipStream_t* stream, unsigned int flags) {
    if (stream == nullptr || flags > hipStreamNonBlocking) return record(hipErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_runtime_mutex);
    *stream = new ihipStream_t();
    g_streams.push_back(*stream);
    return hipSuccess;
}

hipError_t hipStreamDestroy(hipStream_t stream) {
    std::lock_guard<std::mutex> lock(g_runtime_mutex);
    auto it = std::find(g_streams.begin(), g_streams.end(), stream);
    if (stream == nullptr || it == g_streams.end()) return record(hipErrorInvalidResourceHandle);
    drain(stream);  // its work still completes, as on a GPU
    g_streams.erase(it);
    delete stream;
    return hipSuccess;
}

hipError_t hipStreamSynchronize(hipStream_t stream) {
    std::lock_guard<std::mutex> lock(g_runtime_mutex);
    if (!known_stream(stream)) return record(hipErrorInvalidResourceHandle);
    drain(resolve(stream));
    return take_pending_fault();
}
