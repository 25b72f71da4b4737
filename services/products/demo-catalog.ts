/**
 * The demo catalog seeded on first start: products (seeded by `products`) and their initial
 * stock (seeded by `inventory`). Each product's id is a name-based UUID (RFC 4122 §4.3, version 5,
 * SHA-1) of its SKU, so both services agree on it without calling each other, and seeding twice
 * inserts nothing new.
 */
import crypto from "node:crypto";

export interface DemoProduct {
	readonly id: string;
	readonly sku: string;
	readonly name: string;
	readonly description: string;
	/** Integer cents. */
	readonly price: number;
	/** ISO 4217. */
	readonly currency: "USD";
	/** Initial units on hand. */
	readonly stock: number;
}

/** The shop's namespace UUID for name-based ids. */
const NAMESPACE = "6f1c2f4e-8a51-4c1e-9f6a-3d2b7c9e5a10";

/** A version-5 UUID of `name` in the shop's namespace (RFC 4122 §4.3). */
export function nameUuid(name: string): string {
	const ns = Buffer.from(NAMESPACE.replace(/-/g, ""), "hex");
	const hash = crypto.createHash("sha1").update(ns).update(name, "utf8").digest();
	hash[6] = (hash[6]! & 0x0f) | 0x50;
	hash[8] = (hash[8]! & 0x3f) | 0x80;
	const h = hash.subarray(0, 16).toString("hex");
	return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

const rows: [sku: string, name: string, description: string, price: number, stock: number][] = [
	[
		"KB-MECH-87",
		"Tenkeyless Mechanical Keyboard",
		"87-key keyboard with hot-swappable brown switches, PBT keycaps and USB-C.",
		8999,
		40
	],
	[
		"MS-WL-PRO",
		"Wireless Ergonomic Mouse",
		"Vertical mouse, 4000 DPI sensor, Bluetooth and 2.4 GHz, 70-day battery.",
		4999,
		60
	],
	[
		"MN-27-4K",
		'27" 4K IPS Monitor',
		"3840x2160 IPS panel, 99% sRGB, USB-C with 65 W power delivery.",
		32999,
		15
	],
	[
		"HP-ANC-300",
		"Noise-Cancelling Headphones",
		"Over-ear, active noise cancelling, 30 h battery, multipoint Bluetooth.",
		19999,
		25
	],
	[
		"CB-USBC-2M",
		"USB-C Cable 2 m",
		"USB 3.2 Gen 2 cable, 10 Gbit/s, 100 W charging, braided.",
		1499,
		200
	],
	[
		"DK-USBC-11",
		"11-in-1 USB-C Dock",
		"Dual HDMI, gigabit Ethernet, SD reader, 100 W pass-through charging.",
		12999,
		30
	],
	[
		"WC-1080-AF",
		"1080p Autofocus Webcam",
		"Full HD at 60 fps, dual microphones, privacy shutter.",
		6999,
		45
	],
	[
		"SSD-NVME-1T",
		"1 TB NVMe SSD",
		"PCIe 4.0 M.2 2280 drive, 7000 MB/s sequential read.",
		8999,
		50
	],
	[
		"LS-ALU-ADJ",
		"Aluminium Laptop Stand",
		'Adjustable height and angle, folds flat, fits 10-17" laptops.',
		3999,
		80
	],
	[
		"DM-XL-FELT",
		"XL Felt Desk Mat",
		"90x40 cm merino felt mat with a non-slip cork base.",
		2999,
		70
	],
	[
		"LP-LED-DESK",
		"LED Desk Lamp",
		"Dimmable, colour temperature 2700-6500 K, USB-A charging port.",
		4499,
		35
	],
	[
		"CH-ERGO-MESH",
		"Ergonomic Mesh Chair",
		"Adjustable lumbar support, 4D armrests, breathable mesh back.",
		34999,
		10
	],
	[
		"MC-USB-CARD",
		"USB Condenser Microphone",
		"Cardioid pattern, 24-bit/96 kHz, gain knob and mute button.",
		9999,
		20
	],
	[
		"SP-BT-MINI",
		"Portable Bluetooth Speaker",
		"Waterproof IP67, 12 h playback, pairs for stereo.",
		5999,
		55
	],
	["PB-20K-PD", "20 000 mAh Power Bank", "65 W USB-C PD, charges a laptop, two ports.", 4999, 65],
	["CH-GAN-65", "65 W GaN Charger", "Three ports (2x USB-C, 1x USB-A), foldable plug.", 3999, 90],
	[
		"HB-USB3-4",
		"4-Port USB 3.0 Hub",
		"Slim aluminium hub, 5 Gbit/s per port, 60 cm cable.",
		1999,
		120
	],
	[
		"TB-PEN-S",
		"Pen Tablet Small",
		"Drawing tablet, 8192 pressure levels, battery-free pen.",
		5999,
		25
	],
	[
		"RT-WIFI6-AX",
		"Wi-Fi 6 Router",
		"AX3000 dual-band router, four gigabit ports, WPA3.",
		11999,
		18
	],
	[
		"SW-8P-GB",
		"8-Port Gigabit Switch",
		"Unmanaged, fanless metal housing, plug and play.",
		2999,
		40
	],
	[
		"BK-CLEAN-CODE",
		"Clean Code (paperback)",
		"Robert C. Martin's handbook of agile software craftsmanship.",
		3799,
		30
	],
	[
		"BK-DDIA",
		"Designing Data-Intensive Applications",
		"Martin Kleppmann on reliable, scalable and maintainable systems.",
		4599,
		30
	],
	[
		"MG-CERAMIC",
		"Developer Coffee Mug",
		"350 ml ceramic mug, dishwasher safe, printed with `git blame`.",
		1299,
		150
	],
	[
		"ST-SILICON",
		"Laptop Sticker Pack",
		"Twenty vinyl stickers of open-source logos, weatherproof.",
		799,
		300
	]
];

/** The demo products, each with its deterministic id. */
export const DEMO_CATALOG: readonly DemoProduct[] = Object.freeze(
	rows.map(([sku, name, description, price, stock]) =>
		Object.freeze({
			id: nameUuid(`product:${sku}`),
			sku,
			name,
			description,
			price,
			currency: "USD" as const,
			stock
		})
	)
);
