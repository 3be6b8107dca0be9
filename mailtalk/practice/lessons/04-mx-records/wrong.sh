# Lesson 4 not done: only the preference is looked at.
mailtalk mx shop.test --resolver ${NS_ISP_TEST_DNS} --brief
