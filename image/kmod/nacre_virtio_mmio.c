// SPDX-License-Identifier: GPL-2.0
/*
 * nacre_virtio_mmio: registers the virtio-mmio devices named on the
 * kernel's command line, for kernels built without
 * CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES (Debian's).
 *
 * A Nitro Enclave has no ACPI description of its devices: the hypervisor
 * places the vsock and NSM devices at fixed addresses and the image's
 * command line names them, as "virtio_mmio.device=SIZE@BASE:IRQ[:ID]".
 * A kernel with that option reads those words itself; Debian's does not,
 * so its virtio_mmio driver never finds the devices. nacre-init hands
 * this module the same words (as "device=..."), and the module registers
 * one "virtio-mmio" platform device for each, with the same memory and
 * interrupt resources the built-in code would give it; the virtio_mmio
 * driver then binds to them as usual.
 */
#include <linux/init.h>
#include <linux/ioport.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/platform_device.h>

#define MAX_DEVICES 8

static char *device[MAX_DEVICES];
static int devices;
module_param_array(device, charp, &devices, 0444);
MODULE_PARM_DESC(device, "SIZE@BASE:IRQ[:ID], as virtio_mmio.device= on the command line");

static struct platform_device *registered[MAX_DEVICES];

/* Parses SIZE@BASE:IRQ[:ID] (SIZE with K/M/G suffixes) as the kernel's
 * own command-line code does. */
static int parse(const char *word, struct resource res[2], long *id)
{
	char *end;
	unsigned long long size, base;
	unsigned int irq;
	int consumed = 0;

	size = memparse(word, &end);
	if (!size || *end != '@')
		return -EINVAL;
	if (sscanf(end + 1, "%llx:%u%n", &base, &irq, &consumed) != 2)
		return -EINVAL;
	end = end + 1 + consumed;
	*id = PLATFORM_DEVID_AUTO;
	if (*end == ':') {
		unsigned int given;

		if (sscanf(end + 1, "%u", &given) != 1)
			return -EINVAL;
		*id = given;
	} else if (*end) {
		return -EINVAL;
	}
	res[0] = (struct resource)DEFINE_RES_MEM(base, size);
	res[1] = (struct resource)DEFINE_RES_IRQ(irq);
	return 0;
}

static void unregister_all(void)
{
	int i;

	for (i = 0; i < MAX_DEVICES; i++) {
		if (registered[i])
			platform_device_unregister(registered[i]);
		registered[i] = NULL;
	}
}

static int __init nacre_virtio_mmio_init(void)
{
	struct resource res[2];
	long id;
	int i, err;

	for (i = 0; i < devices; i++) {
		err = parse(device[i], res, &id);
		if (err) {
			pr_err("nacre_virtio_mmio: cannot read device=%s (want SIZE@BASE:IRQ[:ID])\n",
			       device[i]);
			unregister_all();
			return err;
		}
		registered[i] = platform_device_register_resndata(NULL, "virtio-mmio", id,
								  res, ARRAY_SIZE(res), NULL, 0);
		if (IS_ERR(registered[i])) {
			err = PTR_ERR(registered[i]);
			registered[i] = NULL;
			pr_err("nacre_virtio_mmio: registering %s failed: %d\n", device[i], err);
			unregister_all();
			return err;
		}
		pr_info("nacre_virtio_mmio: device %pR irq %llu\n", &res[0],
			(unsigned long long)res[1].start);
	}
	return 0;
}

static void __exit nacre_virtio_mmio_exit(void)
{
	unregister_all();
}

module_init(nacre_virtio_mmio_init);
module_exit(nacre_virtio_mmio_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("virtio-mmio devices from the kernel command line, for Nitro Enclaves");
