/* Bare-metal start for the QEMU MPS2 boards (mps2-an386: Cortex-M4F, mps2-an500: Cortex-M7): the vector
 * table, an FPU-enabling reset handler, and fault handlers that end the run through semihosting (so a fault
 * is qemu exit status 1, never a hang). newlib's rdimon _start then zeroes .bss, calls main and exits with
 * its status. */
#include <stdint.h>

extern void _start(void);
extern uint32_t __stack_top;

static void semihost_exit(uint32_t reason) {
  register uint32_t r0 __asm__("r0") = 0x18; /* SYS_EXIT */
  register uint32_t r1 __asm__("r1") = reason;
  __asm__ volatile("bkpt 0xab" : : "r"(r0), "r"(r1) : "memory");
  for (;;) {
  }
}

void fault_handler(void) { semihost_exit(0x20024); /* ADP_Stopped_RunTimeErrorUnknown: exit status 1 */ }

void reset_handler(void) {
  volatile uint32_t *cpacr = (volatile uint32_t *)0xE000ED88;
  *cpacr |= 0xFu << 20; /* CP10, CP11: full access to the FPU, before any float instruction */
  __asm__ volatile("dsb\n isb" ::: "memory");
  _start();
  semihost_exit(0x20026); /* not reached: _start calls exit */
}

__attribute__((section(".vectors"), used)) void (*const vectors[16])(void) = {
    (void (*)(void))&__stack_top, reset_handler, fault_handler, fault_handler, fault_handler, fault_handler,
    fault_handler, 0, 0, 0, 0, fault_handler, fault_handler, 0, fault_handler, fault_handler,
};
