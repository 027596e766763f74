/** A mistake in the command line found after parsing (a missing choice, a bad combination): exit 2. */
export class UsageError extends Error {}
