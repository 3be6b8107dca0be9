# Lesson 1 not done: asking about the wrong domain (the MX of example.net is never asked).
mailtalk mx stranger.test --resolver ${NS_ISP_TEST_DNS} --brief
