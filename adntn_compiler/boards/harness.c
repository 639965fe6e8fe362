/* Test harness of an adntn C bundle: what `adntn run BUNDLE` and the tests run under qemu. Not part of the
 * model (the firmware calls adntn_model_run itself). File I/O goes through the host: plain Linux syscalls
 * under qemu-aarch64, ARM semihosting under qemu-system-arm.
 *
 *   adntn_run [input.bin [output.bin]] [--repeat N] [--null]
 *
 * Reads ADNTN_MODEL_INPUT_SIZE float32 values, runs the model N times, writes the output. --null calls the
 * model with NULL pointers and succeeds only if that returns a negative code (instead of faulting).
 * Exit status: 0 ok, 2 bad input file, 3 the model returned an error, 4 --null was not refused.
 *
 * Built with -DADNTN_MPS2_TIMER (the Cortex-M boards), it also prints "ticks N": the MPS2's CMSDK APB timer 0 (a
 * 32-bit down counter of the 25 MHz peripheral clock) across the N runs. Under `qemu -icount shift=S` virtual time
 * is 2^S ns per instruction, so the ticks count instructions (bundle.py converts them). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adntn_model.h"

static float x[ADNTN_MODEL_INPUT_SIZE], y[ADNTN_MODEL_OUTPUT_SIZE];

#ifdef ADNTN_MPS2_TIMER
#define TIMER0 ((volatile uint32_t *)0x40000000) /* CTRL, VALUE, RELOAD */
static uint32_t timer_start(void) {
  TIMER0[2] = 0xFFFFFFFFu;
  TIMER0[1] = 0xFFFFFFFFu;
  TIMER0[0] = 1;
  return TIMER0[1];
}
#endif

int main(int argc, char **argv) {
  const char *in = "input.bin", *out = "output.bin";
  int repeat = 1, files = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--null") == 0) {
      int rc = adntn_model_run(NULL, y), rc2 = adntn_model_run(x, NULL);
      printf("adntn_model_run(NULL, y) = %d, adntn_model_run(x, NULL) = %d\n", rc, rc2);
      return rc < 0 && rc2 < 0 ? 0 : 4;
    } else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
      repeat = atoi(argv[++i]);
    } else if (files == 0) {
      in = argv[i], files = 1;
    } else {
      out = argv[i];
    }
  }
  FILE *f = fopen(in, "rb");
  if (f == NULL || fread(x, sizeof(float), ADNTN_MODEL_INPUT_SIZE, f) != ADNTN_MODEL_INPUT_SIZE) {
    printf("cannot read %d floats from %s\n", ADNTN_MODEL_INPUT_SIZE, in);
    return 2;
  }
  fclose(f);
#ifdef ADNTN_MPS2_TIMER
  uint32_t t0 = timer_start();
#endif
  for (int r = 0; r < repeat; ++r) {
    int rc = adntn_model_run(x, y);
    if (rc != ADNTN_OK) {
      printf("adntn_model_run returned %d (call %d)\n", rc, adntn_model_failed_call());
      return 3;
    }
  }
#ifdef ADNTN_MPS2_TIMER
  uint32_t t1 = TIMER0[1];
  printf("ticks %lu\n", (unsigned long)(t0 - t1));
#endif
  f = fopen(out, "wb");
  if (f == NULL || fwrite(y, sizeof(float), ADNTN_MODEL_OUTPUT_SIZE, f) != ADNTN_MODEL_OUTPUT_SIZE) {
    printf("cannot write %s\n", out);
    return 2;
  }
  fclose(f);
  return 0;
}
