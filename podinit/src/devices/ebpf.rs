//! A [`DevicePolicy`] as a `BPF_PROG_TYPE_CGROUP_DEVICE` program (cgroup v2 has no devices
//! files), laid out as runc's `devicefilter.go` emits it.
//!
//! The program gets `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! (`access_type` = device type in the low 16 bits, access bits in the high 16) and returns 1
//! to allow, 0 to refuse. It loads type, access, major and minor into r2..r5, then has one block
//! per exception, each falling through to the next on a mismatch and returning the exception's
//! verdict on a match, and returns the default at the end.
//!
//! An exception of a deny-all policy (an allow rule) matches when every requested access is in
//! it; one of an allow-all policy (a deny rule) when any requested access is: the v1
//! controller's rules, so that both hierarchies decide alike ([`DevicePolicy::permits`]).

use super::{Access, DevicePolicy};

/// One `struct bpf_insn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// The kernel's 8-byte encoding (little-endian bitfields: dst in the low nibble).
    pub fn encode(&self) -> [u8; 8] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [
            self.code,
            (self.src << 4) | (self.dst & 0x0f),
            off[0],
            off[1],
            imm[0],
            imm[1],
            imm[2],
            imm[3],
        ]
    }
}

// Opcode parts (include/uapi/linux/bpf_common.h, bpf.h).
pub const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
pub const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
pub const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
pub const ALU32_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
pub const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
pub const JMP_JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
pub const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
pub const JMP_JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
pub const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

/// A jump whose target (the next block) is patched when the block is complete.
struct Block {
    insns: Vec<Insn>,
    /// Indices (in `insns`) of jumps to the next block.
    to_next: Vec<usize>,
}

impl Block {
    fn jump_to_next(&mut self, code: u8, dst: u8, src: u8, imm: i32) {
        self.to_next.push(self.insns.len());
        self.insns.push(insn(code, dst, src, 0, imm));
    }

    fn finish(mut self) -> Vec<Insn> {
        let len = self.insns.len();
        for i in self.to_next {
            // The next block starts right after this one: pc + 1 + off == len.
            self.insns[i].off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
        }
        self.insns
    }
}

fn verdict(allow: bool) -> [Insn; 2] {
    [
        insn(ALU32_MOV_K, R0, 0, 0, i32::from(allow)),
        insn(JMP_EXIT, 0, 0, 0, 0),
    ]
}

/// The program enforcing `policy`.
pub fn program(policy: &DevicePolicy) -> Vec<Insn> {
    let mut out = vec![
        // r2 = type (low 16 bits of access_type)
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU32_AND_K, R2, 0, 0, 0xffff),
        // r3 = access (high 16 bits)
        insn(LDX_MEM_W, R3, R1, 0, 0),
        insn(ALU32_RSH_K, R3, 0, 0, 16),
        // r4 = major, r5 = minor
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    let exception_verdict = !policy.default_allow();
    for (m, access) in policy.exceptions() {
        let mut b = Block {
            insns: Vec::new(),
            to_next: Vec::new(),
        };
        b.jump_to_next(JMP_JNE_K, R2, 0, m.typ.bpf() as i32);
        if access != Access::ALL {
            // r1 (the ctx pointer is no longer needed) = requested & covered
            b.insns.push(insn(ALU32_MOV_X, R1, R3, 0, 0));
            b.insns.push(insn(ALU32_AND_K, R1, 0, 0, access.0 as i32));
            if exception_verdict {
                // allow exception: every requested access must be covered
                b.jump_to_next(JMP_JNE_X, R1, R3, 0);
            } else {
                // deny exception: any covered access denies
                b.jump_to_next(JMP_JEQ_K, R1, 0, 0);
            }
        }
        // Device numbers fit in 31 bits (checked when the rules were read), so the
        // sign-extended immediate equals the zero-extended register.
        if let Some(major) = m.major {
            b.jump_to_next(JMP_JNE_K, R4, 0, major as i32);
        }
        if let Some(minor) = m.minor {
            b.jump_to_next(JMP_JNE_K, R5, 0, minor as i32);
        }
        b.insns.extend(verdict(exception_verdict));
        out.extend(b.finish());
    }
    out.extend(verdict(policy.default_allow()));
    out
}

/// The program as the bytes `BPF_PROG_LOAD` takes.
pub fn encode(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(Insn::encode).collect()
}

#[cfg(test)]
mod tests {
    use super::super::{DevType, Match, Rule};
    use super::*;
    use proptest::prelude::*;

    /// Runs a program on a device ctx, with the semantics of the instructions `program` emits
    /// (any other instruction fails the test): 64-bit registers, 32-bit ALU ops zero-extending
    /// their result, jumps comparing all 64 bits with a sign-extended immediate.
    fn run(prog: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0u64; 11];
        const CTX: u64 = 0xc7c7_0000;
        r[1] = CTX;
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = prog[pc];
            let (d, s) = (usize::from(i.dst), usize::from(i.src));
            let imm = i64::from(i.imm) as u64;
            let mut next = pc + 1;
            let jump = |cond: bool| {
                if cond {
                    (pc as i64 + 1 + i64::from(i.off)) as usize
                } else {
                    pc + 1
                }
            };
            match i.code {
                LDX_MEM_W => {
                    let off = r[s].wrapping_add(i.off as u64).wrapping_sub(CTX);
                    assert!(off % 4 == 0 && off < 12, "ctx load at {off}");
                    r[d] = u64::from(ctx[off as usize / 4]);
                }
                ALU32_AND_K => r[d] = u64::from(r[d] as u32 & i.imm as u32),
                ALU32_RSH_K => r[d] = u64::from((r[d] as u32) >> i.imm),
                ALU32_MOV_K => r[d] = u64::from(i.imm as u32),
                ALU32_MOV_X => r[d] = u64::from(r[s] as u32),
                JMP_JEQ_K => next = jump(r[d] == imm),
                JMP_JNE_K => next = jump(r[d] != imm),
                JMP_JNE_X => next = jump(r[d] != r[s]),
                JMP_EXIT => return r[0],
                other => panic!("instruction {other:#x} at {pc}"),
            }
            assert!(next < prog.len(), "jump out of the program at {pc}");
            pc = next;
        }
        panic!("no exit");
    }

    fn check(policy: &DevicePolicy, typ: DevType, major: u32, minor: u32, access: Access) {
        let prog = program(policy);
        let got = run(&prog, typ.bpf(), access.0, major, minor);
        let want = policy.permits(typ, major, minor, access);
        assert_eq!(
            got,
            u64::from(want),
            "{typ:?} {major}:{minor} {access} under {policy:?}"
        );
    }

    #[test]
    fn encoding() {
        let i = insn(LDX_MEM_W, R4, R1, 4, 0);
        assert_eq!(i.encode(), [0x61, 0x14, 4, 0, 0, 0, 0, 0]);
        let j = insn(JMP_JNE_K, R2, 0, -2, 0x1234);
        assert_eq!(j.encode(), [0x55, 0x02, 0xfe, 0xff, 0x34, 0x12, 0, 0]);
        assert_eq!(encode(&[i, j]).len(), 16);
    }

    #[test]
    fn default_policy_decides_like_the_v1_model() {
        let p = DevicePolicy::from_rules(&[]).unwrap();
        let prog = program(&p);
        // 6 loads, a block per default exception, 2 for the default.
        assert!(prog.len() > 6 + 2 * super::super::DEFAULT_RULES.len());
        assert_eq!(run(&prog, 1, 2, 254, 0), 0, "read the host's disk");
        assert_eq!(run(&prog, 1, 1, 254, 0), 1, "mknod it");
        assert_eq!(run(&prog, 2, 6, 1, 3), 1, "rw /dev/null");
        assert_eq!(run(&prog, 2, 6, 136, 42), 1, "a pts");
        assert_eq!(run(&prog, 2, 2, 10, 229), 0, "fuse");
        for (t, maj, min) in [
            (DevType::Char, 1, 3),
            (DevType::Block, 8, 0),
            (DevType::Char, 4, 1),
        ] {
            for a in 1..8 {
                check(&p, t, maj, min, Access(a));
            }
        }
    }

    #[test]
    fn allow_all_is_two_instructions_after_the_loads() {
        let prog = program(&DevicePolicy::allow_all());
        assert_eq!(prog.len(), 8);
        assert_eq!(run(&prog, 1, 7, 8, 0), 1);
    }

    #[test]
    fn deny_exceptions_deny_on_any_overlap() {
        let mut p = DevicePolicy::allow_all();
        p.apply(&Rule {
            allow: false,
            what: Some(Match {
                typ: DevType::Block,
                major: Some(8),
                minor: None,
            }),
            access: Access(Access::WRITE.0),
        })
        .unwrap();
        let prog = program(&p);
        assert_eq!(run(&prog, 1, 4, 8, 3), 0);
        assert_eq!(run(&prog, 1, 6, 8, 3), 0, "O_RDWR");
        assert_eq!(run(&prog, 1, 2, 8, 3), 1);
        assert_eq!(run(&prog, 2, 4, 8, 3), 1, "a char device");
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        (
            any::<bool>(),
            prop_oneof![Just(None), (0u8..2).prop_map(Some)],
            prop_oneof![Just(None), (0u32..4).prop_map(Some)],
            prop_oneof![Just(None), (0u32..4).prop_map(Some)],
            1u32..8,
        )
            .prop_map(|(allow, t, major, minor, a)| Rule {
                allow,
                what: t.map(|t| Match {
                    typ: if t == 0 {
                        DevType::Block
                    } else {
                        DevType::Char
                    },
                    major,
                    minor,
                }),
                access: Access(a),
            })
    }

    proptest! {
        /// Whatever rules build the policy, the program decides every request as the v1
        /// controller model does.
        #[test]
        fn program_matches_the_model(rules in proptest::collection::vec(arb_rule(), 0..12)) {
            let mut p = DevicePolicy::default();
            for r in &rules {
                // Rules the model refuses (holes in wildcards) are refused before any program.
                let _ = p.apply(r);
            }
            let prog = program(&p);
            for t in [DevType::Block, DevType::Char] {
                for major in 0..5 {
                    for minor in 0..5 {
                        for a in 1..8 {
                            let got = run(&prog, t.bpf(), a, major, minor);
                            let want = p.permits(t, major, minor, Access(a));
                            prop_assert_eq!(got, u64::from(want), "{:?} {}:{} {}", t, major, minor, a);
                        }
                    }
                }
            }
        }
    }
}
