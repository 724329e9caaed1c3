# AVX-512 VNNI int8 micro-kernel of ViTQuant's integer runtime (src/ViTQuant/Kernels/Int8GemmVnni.cs).
# .NET 10 has no API for the EVEX vpdpbusd, so this routine is assembled here (gen.sh) and its bytes are
# embedded in Int8GemmVnni.cs, which copies them into executable memory and calls them.
#
# void vnni8x32(const uint8_t* a /*rdi*/, long lda /*rsi*/, const int8_t* b /*rdx*/, long kq /*rcx*/, int32_t* acc /*r8*/)
#   acc[r*32 + c] = sum over q < kq, j < 4 of a[r*lda + 4q + j] * b[q*128 + 4c + j]   (r < 8, c < 32)
#   a: 8 rows of unsigned bytes; b: one packed panel (32 columns, 4 k a column per 4 bytes, 128 bytes a k-quad).
#   kq >= 1. System V AMD64 ABI; clobbers only caller-saved registers (rax, rcx, rdx, rdi, rsi, r8-r11, zmm).
.intel_syntax noprefix
.text
.globl vnni8x32
vnni8x32:
    vpxord zmm0, zmm0, zmm0
    vpxord zmm1, zmm1, zmm1
    vpxord zmm2, zmm2, zmm2
    vpxord zmm3, zmm3, zmm3
    vpxord zmm4, zmm4, zmm4
    vpxord zmm5, zmm5, zmm5
    vpxord zmm6, zmm6, zmm6
    vpxord zmm7, zmm7, zmm7
    vpxord zmm8, zmm8, zmm8
    vpxord zmm9, zmm9, zmm9
    vpxord zmm10, zmm10, zmm10
    vpxord zmm11, zmm11, zmm11
    vpxord zmm12, zmm12, zmm12
    vpxord zmm13, zmm13, zmm13
    vpxord zmm14, zmm14, zmm14
    vpxord zmm15, zmm15, zmm15
    lea r9, [rsi + rsi*2]
    lea r10, [rdi + rsi*4]
.Lloop:
    vmovdqu32 zmm16, [rdx]
    vmovdqu32 zmm17, [rdx + 64]
    vpbroadcastd zmm18, dword ptr [rdi]
    vpbroadcastd zmm19, dword ptr [rdi + rsi]
    vpbroadcastd zmm20, dword ptr [rdi + rsi*2]
    vpbroadcastd zmm21, dword ptr [rdi + r9]
    vpbroadcastd zmm22, dword ptr [r10]
    vpbroadcastd zmm23, dword ptr [r10 + rsi]
    vpbroadcastd zmm24, dword ptr [r10 + rsi*2]
    vpbroadcastd zmm25, dword ptr [r10 + r9]
    vpdpbusd zmm0, zmm18, zmm16
    vpdpbusd zmm1, zmm18, zmm17
    vpdpbusd zmm2, zmm19, zmm16
    vpdpbusd zmm3, zmm19, zmm17
    vpdpbusd zmm4, zmm20, zmm16
    vpdpbusd zmm5, zmm20, zmm17
    vpdpbusd zmm6, zmm21, zmm16
    vpdpbusd zmm7, zmm21, zmm17
    vpdpbusd zmm8, zmm22, zmm16
    vpdpbusd zmm9, zmm22, zmm17
    vpdpbusd zmm10, zmm23, zmm16
    vpdpbusd zmm11, zmm23, zmm17
    vpdpbusd zmm12, zmm24, zmm16
    vpdpbusd zmm13, zmm24, zmm17
    vpdpbusd zmm14, zmm25, zmm16
    vpdpbusd zmm15, zmm25, zmm17
    add rdi, 4
    add r10, 4
    sub rdx, -128
    dec rcx
    jnz .Lloop
    vmovdqu32 [r8 + 0], zmm0
    vmovdqu32 [r8 + 64], zmm1
    vmovdqu32 [r8 + 128], zmm2
    vmovdqu32 [r8 + 192], zmm3
    vmovdqu32 [r8 + 256], zmm4
    vmovdqu32 [r8 + 320], zmm5
    vmovdqu32 [r8 + 384], zmm6
    vmovdqu32 [r8 + 448], zmm7
    vmovdqu32 [r8 + 512], zmm8
    vmovdqu32 [r8 + 576], zmm9
    vmovdqu32 [r8 + 640], zmm10
    vmovdqu32 [r8 + 704], zmm11
    vmovdqu32 [r8 + 768], zmm12
    vmovdqu32 [r8 + 832], zmm13
    vmovdqu32 [r8 + 896], zmm14
    vmovdqu32 [r8 + 960], zmm15
    vzeroupper
    ret
