/*
 * init_poweroff.c - PID 1 of the bare cold-start baseline (bench/run.sh).
 *
 * The baseline measures what QEMU and the kernel cost on their own: boot,
 * unpack the initramfs, run init, power off. So this init does nothing but
 * power the VM off. Without ACPI poweroff a reset ends the VM as well,
 * because QEMU runs with -no-reboot.
 */
#include <sys/reboot.h>
#include <unistd.h>

int main(void)
{
    reboot(RB_POWER_OFF);
    reboot(RB_AUTOBOOT);
    for (;;)
        pause();
}
