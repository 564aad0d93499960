/* Diagnostics: the one-line "gpurnn-emu: error:" reports, code-address names, and the
 * SIGSEGV/SIGBUS handler that turns a fault on a guard page or on a protected device
 * allocation into a report naming the allocation. */
#include <cxxabi.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mutex>

#include "internal.h"

namespace gpurnn_emu {
namespace detail {
namespace {

void vprint_line(const char *kind, const char *fmt, va_list ap)
{
    /* One write(2) per line, so that lines of concurrent threads do not interleave. */
    char buf[2048];
    int n = snprintf(buf, sizeof buf, "gpurnn-emu: %s: ", kind);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : ((size_t)m < sizeof buf - (size_t)n - 1 ? (size_t)m : sizeof buf - (size_t)n - 2));
    buf[len++] = '\n';
    ssize_t ignored = write(2, buf, len);
    (void)ignored;
}

struct sigaction g_previous_segv, g_previous_bus;

void on_fault(int sig, siginfo_t *info, void *context)
{
    char message[1024];
    bool in_device_work = g_current_work != nullptr;
    if (describe_memory_fault(info->si_addr, in_device_work, message, sizeof message)) {
        /* fatal() is not async-signal-safe in general; we abort right after anyway. */
        fatal("%s", message);
    }
    if (in_device_work) {
        std::string who = current_thread_description();
        fatal("%s at address %p during %s%s%s (not in any device allocation or its guard pages)",
              sig == SIGSEGV ? "segmentation fault" : "bus error", info->si_addr, g_current_work,
              who.empty() ? "" : ", ", who.c_str());
    }
    /* Not ours: hand it to whoever had the signal before (ASan, a debugger's helper, or
     * the default action). */
    struct sigaction &prev = sig == SIGSEGV ? g_previous_segv : g_previous_bus;
    if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction != nullptr) {
        prev.sa_sigaction(sig, info, context);
        return;
    }
    if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && prev.sa_handler != nullptr) {
        prev.sa_handler(sig);
        return;
    }
    signal(sig, SIG_DFL); /* returning re-executes the access, which now kills the process */
}

} // namespace

void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprint_line("error", fmt, ap);
    va_end(ap);
    abort();
}

void report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprint_line("error", fmt, ap);
    va_end(ap);
}

void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprint_line("note", fmt, ap);
    va_end(ap);
}

std::string describe_code_address(const void *address)
{
    char buf[512];
    Dl_info info;
    if (address == nullptr) return "unknown";
    if (dladdr(address, &info) == 0) {
        snprintf(buf, sizeof buf, "%p", address);
        return buf;
    }
    const char *module = info.dli_fname ? info.dli_fname : "?";
    const char *slash = strrchr(module, '/');
    if (slash) module = slash + 1;
    if (info.dli_sname == nullptr) {
        snprintf(buf, sizeof buf, "%p (%s+0x%lx)", address, module,
                 (unsigned long)((const char *)address - (const char *)info.dli_fbase));
        return buf;
    }
    int status = 0;
    char *demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    snprintf(buf, sizeof buf, "%s+0x%lx (%s)", status == 0 && demangled ? demangled : info.dli_sname,
             (unsigned long)((const char *)address - (const char *)info.dli_saddr), module);
    free(demangled);
    return buf;
}

std::string kernel_name(const KernelBody &body)
{
    Dl_info info;
    if (body.func != nullptr && dladdr(body.func, &info) != 0 && info.dli_sname != nullptr &&
        info.dli_saddr == body.func) {
        int status = 0;
        char *demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
        std::string name = status == 0 && demangled ? demangled : info.dli_sname;
        free(demangled);
        return name;
    }
    /* Not in the dynamic symbol table (an executable without -rdynamic, hidden symbols):
     * the address and the parameter types from the launching template's signature. */
    char buf[64];
    snprintf(buf, sizeof buf, "kernel at %p", body.func);
    std::string name = buf;
    const char *with = body.signature ? strstr(body.signature, "[with P = ") : nullptr;
    if (with) {
        std::string types = with + 10;
        if (!types.empty() && types.back() == ']') types.pop_back();
        name += " (" + types + ")";
    }
    return name;
}

void install_fault_handler()
{
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_previous_segv);
        sigaction(SIGBUS, &sa, &g_previous_bus);
    });
    /* Kernel threads run on small fiber stacks: the handler needs a stack of its own. It
     * is the thread's until the thread ends, when the destructor takes it back. */
    struct AltStack {
        void *memory = nullptr;
        AltStack()
        {
            stack_t current;
            if (sigaltstack(nullptr, &current) != 0 || !(current.ss_flags & SS_DISABLE)) return;
            stack_t ss;
            ss.ss_size = 256 * 1024;
            ss.ss_sp = memory = malloc(ss.ss_size);
            ss.ss_flags = 0;
            if (memory && sigaltstack(&ss, nullptr) != 0) {
                free(memory);
                memory = nullptr;
            }
        }
        ~AltStack()
        {
            if (!memory) return;
            stack_t ss;
            memset(&ss, 0, sizeof ss);
            ss.ss_flags = SS_DISABLE;
            sigaltstack(&ss, nullptr);
            free(memory);
        }
    };
    static thread_local AltStack alt_stack;
    (void)alt_stack.memory;
}

} // namespace detail
} // namespace gpurnn_emu
