/** The README's curl walkthrough: the first ```bash block after the "Walkthrough" heading. */
export function walkthroughBlock(readme: string): string {
	const start = readme.indexOf("## Walkthrough");
	if (start < 0) throw new Error("README has no Walkthrough section");
	const m = /```bash\n([\s\S]*?)```/.exec(readme.slice(start));
	if (!m) throw new Error("README Walkthrough has no bash block");
	return m[1]!;
}
