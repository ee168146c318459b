//! The CPUID fault handler (see the crate's documentation).

use std::arch::x86_64::__cpuid_count;
use std::sync::atomic::{AtomicPtr, Ordering};

/// `arch_prctl` codes (`asm/prctl.h`).
const ARCH_GET_CPUID: libc::c_int = 0x1011;
const ARCH_SET_CPUID: libc::c_int = 0x1012;

/// The CPUID bits this library clears, as `(leaf, subleaf, register, mask)`; register 0-3 is
/// EAX, EBX, ECX, EDX. From Intel's SDM vol. 2A, CPUID, "Structured Extended Feature Flags".
const HIDDEN: &[(u32, u32, usize, u32)] = &[
    // Leaf 7.0 EBX: AVX512F (16), DQ (17), IFMA (21), PF (26), ER (27), CD (28), BW (30),
    // VL (31).
    (
        7,
        0,
        1,
        1 << 16 | 1 << 17 | 1 << 21 | 1 << 26 | 1 << 27 | 1 << 28 | 1 << 30 | 1 << 31,
    ),
    // Leaf 7.0 ECX: AVX512_VBMI (1), VBMI2 (6), VNNI (11), BITALG (12), VPOPCNTDQ (14).
    (7, 0, 2, 1 << 1 | 1 << 6 | 1 << 11 | 1 << 12 | 1 << 14),
    // Leaf 7.0 EDX: 4VNNIW (2), 4FMAPS (3), VP2INTERSECT (8), AMX-BF16 (22), FP16 (23),
    // AMX-TILE (24), AMX-INT8 (25).
    (
        7,
        0,
        3,
        1 << 2 | 1 << 3 | 1 << 8 | 1 << 22 | 1 << 23 | 1 << 24 | 1 << 25,
    ),
    // Leaf 7.1 EAX: AVX-VNNI (4), AVX512_BF16 (5), AMX-FP16 (21), AVX-IFMA (23).
    (7, 1, 0, 1 << 4 | 1 << 5 | 1 << 21 | 1 << 23),
    // Leaf 7.1 EDX: AVX-VNNI-INT8 (4), AVX-NE-CONVERT (5), AMX-COMPLEX (8),
    // AVX-VNNI-INT16 (10), AVX10 (19).
    (7, 1, 3, 1 << 4 | 1 << 5 | 1 << 8 | 1 << 10 | 1 << 19),
];

/// `registers` (EAX..EDX of CPUID `leaf`.`subleaf`) with the hidden bits cleared.
pub fn hidden(leaf: u32, subleaf: u32, mut registers: [u32; 4]) -> [u32; 4] {
    for &(l, s, register, mask) in HIDDEN {
        if l == leaf && s == subleaf {
            registers[register] &= !mask;
        }
    }
    registers
}

fn arch_prctl(code: libc::c_int, argument: libc::c_ulong) -> libc::c_long {
    // SAFETY: ARCH_GET_CPUID / ARCH_SET_CPUID take an integer and touch no memory.
    unsafe { libc::syscall(libc::SYS_arch_prctl, code, argument) }
}

/// The SIGSEGV action that was installed before ours (null: none recorded yet).
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());

/// Says why on standard error and aborts (async-signal-safe: `write` and `abort` only).
fn fail(message: &str) -> ! {
    // SAFETY: writes `message`'s bytes to fd 2; abort never returns.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
        libc::abort()
    }
}

extern "C" fn on_sigsegv(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler. RIP of a fault
    // raised by CPUID points at that instruction, in readable code; after another fault RIP
    // may be unreadable, and reading it faults again inside this handler, where SIGSEGV is
    // blocked, so the kernel ends the process: what that fault would have done anyway.
    unsafe {
        let context = &mut *context.cast::<libc::ucontext_t>();
        let registers = &mut context.uc_mcontext.gregs;
        let rip = registers[libc::REG_RIP as usize] as *const u8;
        if !rip.is_null() && *rip == 0x0F && *rip.add(1) == 0xA2 {
            let leaf = registers[libc::REG_RAX as usize] as u32;
            let subleaf = registers[libc::REG_RCX as usize] as u32;
            if arch_prctl(ARCH_SET_CPUID, 1) != 0 {
                fail("cpuid-mask: could not lift CPUID faulting in the handler\n");
            }
            let result = __cpuid_count(leaf, subleaf);
            if arch_prctl(ARCH_SET_CPUID, 0) != 0 {
                fail("cpuid-mask: could not restore CPUID faulting in the handler\n");
            }
            let [eax, ebx, ecx, edx] = hidden(
                leaf,
                subleaf,
                [result.eax, result.ebx, result.ecx, result.edx],
            );
            // CPUID writes the 32-bit registers, which zeroes their upper halves.
            registers[libc::REG_RAX as usize] = i64::from(eax);
            registers[libc::REG_RBX as usize] = i64::from(ebx);
            registers[libc::REG_RCX as usize] = i64::from(ecx);
            registers[libc::REG_RDX as usize] = i64::from(edx);
            registers[libc::REG_RIP as usize] += 2;
            return;
        }
        // Not ours: hand it to the previous action.
        let previous = PREVIOUS.load(Ordering::Acquire);
        if !previous.is_null() {
            let previous = &*previous;
            if previous.sa_flags & libc::SA_SIGINFO != 0 && previous.sa_sigaction > 1 {
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(previous.sa_sigaction);
                handler(signal, info, std::ptr::from_mut(context).cast());
                return;
            }
            if previous.sa_flags & libc::SA_SIGINFO == 0 && previous.sa_sigaction > 1 {
                let handler: extern "C" fn(libc::c_int) =
                    std::mem::transmute(previous.sa_sigaction);
                handler(signal);
                return;
            }
        }
        // SIG_DFL (or SIG_IGN, which the kernel does not honour for a fault): reinstall the
        // default and return, so that the faulting instruction runs again and ends the
        // process as it would have without us.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGSEGV, &default, std::ptr::null_mut());
    }
}

/// Runs when the library is loaded: installs the handler, then turns CPUID faulting on.
extern "C" fn load() {
    if arch_prctl(ARCH_GET_CPUID, 0) < 0 {
        fail(
            "cpuid-mask: this kernel or CPU has no CPUID faulting (arch_prctl ARCH_GET_CPUID \
             failed), so AVX-512 cannot be hidden from this process; run the comparison on a \
             machine without AVX-512 instead\n",
        );
    }
    // SAFETY: plain sigaction calls on a zeroed struct; the previous action is leaked on
    // purpose, as the handler may read it for the life of the process.
    unsafe {
        let previous: &'static mut libc::sigaction = Box::leak(Box::new(std::mem::zeroed()));
        let mut action: libc::sigaction = std::mem::zeroed();
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            on_sigsegv;
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSEGV, &action, previous) != 0 {
            fail("cpuid-mask: sigaction(SIGSEGV) failed\n");
        }
        PREVIOUS.store(previous, Ordering::Release);
    }
    if arch_prctl(ARCH_SET_CPUID, 0) != 0 {
        fail(
            "cpuid-mask: arch_prctl(ARCH_SET_CPUID, 0) failed: this CPU cannot fault on CPUID, \
             so AVX-512 cannot be hidden from this process\n",
        );
    }
}

/// The loader calls every function in `.init_array` when it maps the library.
#[used]
#[unsafe(link_section = ".init_array")]
static LOAD: extern "C" fn() = load;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx512_bits_are_cleared_and_the_rest_kept() {
        let all = [u32::MAX; 4];
        let leaf7 = hidden(7, 0, all);
        assert_eq!(
            leaf7[0],
            u32::MAX,
            "EAX of leaf 7.0 (the highest subleaf) is kept"
        );
        assert_eq!(leaf7[1] & 1 << 16, 0, "AVX512F");
        assert_ne!(leaf7[1] & 1 << 5, 0, "AVX2 is kept");
        assert_ne!(leaf7[1] & 1 << 3, 0, "BMI1 is kept");
        assert_eq!(leaf7[3] & 1 << 24, 0, "AMX-TILE");
        assert_eq!(hidden(7, 1, all)[0] & 1 << 5, 0, "AVX512_BF16");
        assert_eq!(
            hidden(1, 0, all),
            all,
            "leaf 1 (FMA, AVX, F16C...) is untouched"
        );
    }
}
