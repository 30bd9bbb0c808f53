/* abi NAME64 NR64 NR32 NRX32: the same call through the three x86 ABIs — `syscall` with NR64,
 * `int 0x80` with the i386 number NR32, `syscall` with the x32 number NRX32 (bit 0x40000000) —
 * printing each result (negative: -errno). */
#include <stdio.h>
#include <stdlib.h>

static long sys64(long nr) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr) : "rcx", "r11", "memory");
    return ret;
}

static long int80(long nr) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr) : "memory");
    return ret;
}

int main(int argc, char **argv) {
    if (argc < 4) return 64;
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("x86_64 %ld\n", sys64(strtol(argv[1], NULL, 0)));
    printf("i386 %d\n", (int)int80(strtol(argv[2], NULL, 0)));
    printf("x32 %ld\n", sys64(strtol(argv[3], NULL, 0)));
    return 0;
}
