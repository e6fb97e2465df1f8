from wrapup_batch.cli import main

main()
